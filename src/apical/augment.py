"""Batched, on-device data augmentation (no per-example Python loop, no host work).

`crop_flip` is the CIFAR-10 protocol of NN 2021 (the authors' code): pad by 4 with zeros,
take a random 32x32 crop, flip horizontally with probability 1/2; every example gets its
own draw from the generator. `resized_crop_flip` is the ImageNet protocol, applied while
the images are decoded (`apical.images.ImageStream.sample`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from apical.errors import ApicalError
from apical.images import ImageStream

AUGMENTATIONS = ("none", "crop_flip", "resized_crop_flip")


def crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols[:, None, None, :]]


def augment(name: str, x: Tensor, generator: torch.Generator) -> Tensor:
    if name == "none":
        return x
    if name == "crop_flip":
        if x.dim() != 4:
            raise ApicalError(
                f"augmentation crop_flip needs images (N, C, H, W), got {tuple(x.shape)}"
            )
        return crop_flip(x, generator)
    raise ApicalError(f"unknown augmentation {name!r}; known: {', '.join(AUGMENTATIONS)}")


def training_batch(
    name: str, x: Tensor | ImageStream, idx: Tensor, generators: dict[str, torch.Generator]
) -> Tensor:
    """The training inputs at `idx`, augmented: on the device from generator "augment", or
    while decoding (ImageStream) from the CPU generator "decode"."""
    if name == "resized_crop_flip":
        if not isinstance(x, ImageStream):
            raise ApicalError(
                "augmentation resized_crop_flip needs dataset 'imagenet' (images decoded per "
                "batch); use crop_flip for tensors"
            )
        return x.sample(idx, generators["decode"])
    return augment(name, x[idx], generators["augment"])
