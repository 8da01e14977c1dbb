"""Batched, on-device data augmentation (no per-example Python loop, no host work).

`crop_flip` is the CIFAR-10 protocol of NN 2021 (the authors' code): pad by 4 with zeros,
take a random 32x32 crop, flip horizontally with probability 1/2; every example gets its
own draw from the generator. `resized_crop_flip` is the ImageNet protocol, applied while
the images are decoded (`apical.images.ImageStream.sample`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from apical.errors import ApicalError
from apical.images import ImageStream

AUGMENTATIONS = ("none", "crop_flip", "resized_crop_flip")


def crop_flip(
    x: Tensor, generator: torch.Generator | Sequence[torch.Generator], pad: int = 4
) -> Tensor:
    """Random crops after zero padding by `pad`, each flipped horizontally with probability
    1/2. x: (N, C, H, W) with one generator, or replicas' batches (R, N, C, H, W) with one
    generator per replica, each replica's draws from its own (as its run alone draws them)."""
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator)
    flat = x.reshape(-1, *x.shape[-3:])
    n = x.shape[-4]
    if len(gens) * n != len(flat):  # checked before any generator is drawn from
        raise ApicalError(f"crop_flip got {len(gens)} generators for a batch of shape "
                          f"{tuple(x.shape)}: give one per replica")  # fmt: skip
    draws = [_draw(n, g, pad, x.device) for g in gens]
    dy, dx, flip = (torch.cat(d) for d in zip(*draws, strict=True))
    return _window(flat, dy, dx, flip, pad).reshape(x.shape)


def _draw(
    n: int, generator: torch.Generator, pad: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    return dy, dx, flip


def _window(x: Tensor, dy: Tensor, dx: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Each example's (H, W) window at (dy, dx) of its padded image, flipped where `flip`."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols[:, None, None, :]]


def augment(name: str, x: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """x augmented: one generator for (N, C, H, W), one per replica for (R, N, C, H, W)."""
    if name == "none":
        return x
    if name == "crop_flip":
        if x.dim() not in (4, 5):  # 5: replicas' batches
            raise ApicalError(
                f"augmentation crop_flip needs images (N, C, H, W), got {tuple(x.shape)}"
            )
        return crop_flip(x, generators)
    raise ApicalError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")


def training_batch(
    name: str,
    x: Tensor | ImageStream,
    idx: Tensor,
    generators: dict[str, torch.Generator],
    augment_keys: Sequence[str] = ("augment",),
) -> Tensor:
    """The training inputs at `idx` ((N,), or (R, N) for replicas), augmented: on the device
    from the generators `augment_keys` (one per replica), or while decoding (ImageStream)
    from the CPU generator "decode"."""
    if name == "resized_crop_flip":
        if not isinstance(x, ImageStream):
            raise ApicalError(
                "augmentation resized_crop_flip needs dataset 'imagenet' (images decoded per "
                "batch); use crop_flip for tensors"
            )
        return x.sample(idx, generators["decode"])
    return augment(name, x[idx], [generators[k] for k in augment_keys])
