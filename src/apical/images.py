"""Class-per-folder image trees (the ImageNet layout: root/train/<class>/*.jpg and
root/val/<class>/*.jpg): listing, decoding, and a streaming, tensor-like view.

`ImageStream` holds file paths, not pixels: indexing it decodes the batch in threads and
returns a normalised float tensor on its device (centre crop: shorter side resized to
`size`, then the central size x size square). `sample(idx, generator)` returns training
crops instead: random-resized crops (area 8–100 % of the image, aspect ratio 3/4–4/3,
log-uniform) flipped with probability 1/2, every draw taken from `generator`, so a run
resumes exactly. Decoding needs Pillow (`pip install 'apical[images]'`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from apical.errors import ApicalError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ApicalError("reading images needs Pillow: pip install 'apical[images]'") from None
    return Image, (UnidentifiedImageError, Image.DecompressionBombError)


def list_tree(root: Path) -> tuple[list[Path], Tensor, list[Path], Tensor, list[str]]:
    """Files and labels of train/ and val/ under root (or root/imagenet); classes are the
    sorted folder names of train/."""
    base = root / "imagenet" if (root / "imagenet" / "train").is_dir() else root
    train_dir, val_dir = base / "train", base / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise ApicalError(
                f"{d} not found; expected a class-per-folder tree with train/ and val/ "
                f"(looked in {root} and {root / 'imagenet'})"
            )
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    missing = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and p.name not in classes)
    if missing:
        raise ApicalError(f"{val_dir} has classes absent from train/: {', '.join(missing[:5])}")
    splits = []
    for folder in (train_dir, val_dir):
        files, labels = [], []
        for label, name in enumerate(classes):
            if not (folder / name).is_dir():
                continue
            found = sorted(
                p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            files += found
            labels += [label] * len(found)
        if not files:
            raise ApicalError(f"no images (.jpg, .png, ...) in the class folders of {folder}")
        splits += [files, torch.tensor(labels)]
    return (*splits, classes)  # type: ignore[return-value]


def decode(path: Path, size: int, crop: np.ndarray | None = None) -> np.ndarray:
    """One image as a (size, size, 3) uint8 array: centre crop, or with `crop` = five
    uniforms (area, log aspect ratio, x, y, flip) a random-resized crop."""
    image_mod, unreadable = _pil()
    try:
        with image_mod.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if crop is None:
                s = min(w, h)
                box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
                flip = False
            else:
                area = w * h * (0.08 + 0.92 * crop[0])
                ratio = math.exp(math.log(3 / 4) + crop[1] * math.log(16 / 9))
                cw = min(w, max(1, round(math.sqrt(area * ratio))))
                ch = min(h, max(1, round(math.sqrt(area / ratio))))
                left, top = round(crop[2] * (w - cw)), round(crop[3] * (h - ch))
                box, flip = (left, top, left + cw, top + ch), crop[4] < 0.5
            im = im.resize((size, size), image_mod.BILINEAR, box=box)
            if flip:
                im = im.transpose(image_mod.FLIP_LEFT_RIGHT)
            return np.asarray(im, dtype=np.uint8)
    except image_mod.DecompressionBombError as e:
        raise ApicalError(
            f"{path} declares more pixels than can be decoded safely ({e}); remove it or shrink it"
        ) from None
    except (OSError, *unreadable) as e:
        raise ApicalError(f"{path} is not a readable image ({e}); remove or replace it") from None


class ImageStream:
    """A tensor-like (N, 3, size, size) view of image files, decoded on indexing."""

    def __init__(
        self,
        files: list[Path],
        size: int,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        device: torch.device | str = "cpu",
    ) -> None:
        self.files, self.size, self.mean, self.std = files, size, mean, std
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.files), 3, self.size, self.size))

    def to(self, device: torch.device | str) -> ImageStream:
        return ImageStream(self.files, self.size, self.mean, self.std, device)

    def subset(self, indices: Tensor) -> ImageStream:
        return ImageStream([self.files[i] for i in indices.tolist()], self.size, self.mean,
                           self.std, self.device)  # fmt: skip

    def _indices(self, idx) -> list[int]:
        if isinstance(idx, slice):
            return list(range(len(self.files)))[idx]
        if isinstance(idx, Tensor):
            return idx.reshape(-1).tolist()
        return list(idx)

    def _batch(self, indices: list[int], crops: np.ndarray | None) -> Tensor:
        workers = min(8, os.cpu_count() or 1, max(1, len(indices)))
        with ThreadPoolExecutor(workers) as pool:
            arrays = list(
                pool.map(
                    lambda k: decode(
                        self.files[indices[k]], self.size, None if crops is None else crops[k]
                    ),
                    range(len(indices)),
                )
            )
        x = torch.from_numpy(np.stack(arrays)).to(self.device).permute(0, 3, 1, 2).float() / 255
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __getitem__(self, idx) -> Tensor:
        """Centre crops of the indexed images (evaluation, probes)."""
        return self._batch(self._indices(idx), None)

    def sample(self, idx, generator: torch.Generator) -> Tensor:
        """Training crops of the indexed images, every random draw from `generator` (CPU)."""
        indices = self._indices(idx)
        crops = torch.rand(len(indices), 5, generator=generator, dtype=torch.float64).numpy()
        return self._batch(indices, crops)
