"""Datasets as whole tensors on the training device.

Readers for the official formats (gzipped IDX for MNIST and Fashion-MNIST, the pickled
"python version" batches of CIFAR-10) from a directory the user names (argument, else the
environment variable APICAL_DATA), and two built-in sets that need no download: XOR and
scikit-learn's 8x8 digits. A missing, truncated or corrupt file raises ApicalError naming
the file, where it was looked for, and what was expected.

Images are float32, shaped (N, C, H, W), read as [0, 1] and by default standardised per
channel with the mean and standard deviation of the training split (after the validation
split is held out, so no validation or test statistics leak in); labels are int64.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import importlib
import math
import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from apical.errors import ApicalError
from apical.images import ImageStream, list_tree

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_FOLDERS = {"mnist": "mnist", "fashion-mnist": "fashion-mnist"}
# md5 of the official gzipped files (train images, train labels, test images, test labels):
# MNIST and Fashion-MNIST share file names and format, so their content tells them apart.
OFFICIAL_MD5 = {
    "f68b3c2dcbeaaa9fbdd348bbdeb94873": "mnist", "d53e105ee54ea40749a09fcbcd1e9432": "mnist",
    "9fb629c4189551a2d022fa330f9573f3": "mnist", "ec29112dd5afa0611ce80d1b7f02629c": "mnist",
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d": "fashion-mnist",
    "25c81989df183df01b3e8a0aad5dffbe": "fashion-mnist",
    "bef4ecab320f06d8554ea6380940ec79": "fashion-mnist",
    "bb300cfdad3c16e7a12a480ee83cd310": "fashion-mnist",
}  # fmt: skip
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TENSOR_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
DATASETS = ("digits", "xor", "mnist", "fashion-mnist", "cifar10", "imagefolder", "imagenet")


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test tensors (validation held out of the training set); for
    "imagenet" the inputs are `ImageStream`s, which index like tensors."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        moved = {k: getattr(self, k).to(device) for k in TENSOR_FIELDS}
        return Dataset(self.name, n_classes=self.n_classes, **moved)


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """The directory named by the user, else $APICAL_DATA."""
    root = data_dir or os.environ.get("APICAL_DATA")
    if not root:
        raise ApicalError(
            "no data directory: pass --data-dir DIR (or data_dir=) or set APICAL_DATA to the "
            "folder holding mnist/, fashion-mnist/ or cifar-10/"
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ApicalError(f"data directory {path} does not exist; check --data-dir / APICAL_DATA")
    return path


def _find(root: Path, subdirs: list[str], filename: str, what: str) -> Path:
    places = [root / s for s in subdirs] + [root]
    for place in places:
        if (place / filename).is_file():
            return place / filename
    raise ApicalError(
        f"{filename} not found in {' or '.join(str(p) for p in places)}; expected the official "
        f"{what} file there (set --data-dir or APICAL_DATA)"
    )


def read_idx(path: Path, expected_dims: int) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes (magic 0x0000080D, D = number of dims)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error, MemoryError) as e:
        raise ApicalError(
            f"{path} is truncated or not gzip ({type(e).__name__}: {e}); expected a gzipped "
            "IDX file: download it again"
        ) from None
    want_magic = 0x0800 | expected_dims
    header = 4 + 4 * expected_dims
    kind = "images" if expected_dims == 3 else "labels"
    if len(raw) < 4:
        raise ApicalError(
            f"{path} holds {len(raw)} bytes once unzipped: the file is empty or truncated; "
            f"download the official {kind} file again"
        )
    got = struct.unpack(">I", raw[:4])[0]
    if got != want_magic:
        raise ApicalError(
            f"{path} is not an IDX file of {kind} (magic {got:#x}, expected {want_magic:#x}); "
            f"download the official {kind} file again"
        )
    if len(raw) < header:
        raise ApicalError(
            f"{path} holds {len(raw)} bytes once unzipped, fewer than its IDX header "
            f"({header}): the file is truncated; download it again"
        )
    dims = struct.unpack(f">{expected_dims}I", raw[4:header])
    size = math.prod(dims)
    if len(raw) - header != size:
        raise ApicalError(
            f"{path} holds {len(raw) - header} bytes of data but its header {dims} needs "
            f"{size}: the file is truncated or corrupt, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_set(name: str, root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    folder = IDX_FOLDERS[name]
    arrays = []
    for split in ("train", "test"):
        img_name, lab_name = IDX_FILES[split]
        img_path = _find(root, [folder], img_name, f"{name} IDX images")
        lab_path = _find(root, [folder], lab_name, f"{name} IDX labels")
        for path in (img_path, lab_path):
            _check_not_the_other_set(path, name)
        images, labels = read_idx(img_path, 3), read_idx(lab_path, 1)
        if len(images) != len(labels):
            raise ApicalError(
                f"{name} {split}: {len(images)} images but {len(labels)} labels; "
                "the files do not belong together"
            )
        if labels.size and labels.max() > 9:
            raise ApicalError(f"{name} {split} labels contain {labels.max()}; expected 0..9")
        x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
        arrays += [x, torch.from_numpy(labels.astype(np.int64))]
    return tuple(arrays)  # type: ignore[return-value]


def _check_not_the_other_set(path: Path, name: str) -> None:
    """Refuse an official file of the other IDX set (MNIST for Fashion-MNIST or back);
    files that are no official file (a custom set) are read as they are."""
    md5 = hashlib.md5()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                md5.update(block)
    except OSError as e:
        raise ApicalError(f"cannot read {path} ({e.strerror}); check its permissions") from None
    found = OFFICIAL_MD5.get(md5.hexdigest())
    if found is not None and found != name:
        raise ApicalError(
            f"{path} is the official {found} file, but dataset {name} was asked for; point "
            f"--data-dir (or APICAL_DATA) at the folder holding {name}/"
        )


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what an official CIFAR-10 batch holds (a dict of bytes, str, ints, lists and
    NumPy arrays) and nothing else: any other global a file names is refused before it
    could be called, so a batch can never run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return _CIFAR_GLOBALS[module, name]()
        raise _Refused(f"{module}.{name}")


class _Refused(Exception):
    pass


def _reconstruct():
    try:
        return importlib.import_module("numpy._core.multiarray")._reconstruct
    except ImportError:  # NumPy 1
        return importlib.import_module("numpy.core.multiarray")._reconstruct


_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,  # bytes written by Python 3, protocol 2
}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    expected = "expected a pickled dict with b'data' (N x 3072 uint8) and b'labels'"
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="bytes").load()
        data, labels = batch[b"data"], batch[b"labels"]
        if not (isinstance(data, np.ndarray) and data.dtype.kind in "ui"):
            raise TypeError(f"b'data' is {type(data).__name__} of {getattr(data, 'dtype', '?')}")
        data = np.asarray(data, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.int64)
    except _Refused as e:
        raise ApicalError(
            f"{path} names {e}, which no CIFAR-10 batch holds: it is not an official batch; "
            "refused without running it (download cifar-10-python.tar.gz again)"
        ) from None
    except Exception as e:  # any failure to parse an untrusted file means it is not a batch
        raise ApicalError(
            f"{path} is truncated or not a CIFAR-10 python batch ({type(e).__name__}); {expected}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(labels) != len(data):
        raise ApicalError(
            f"{path}: data shape {data.shape} with {labels.size} labels; expected N x 3072 "
            "uint8 rows (1024 R, 1024 G, 1024 B) and N labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ApicalError(f"{path}: labels outside 0..9")
    return data, labels


def _load_cifar10(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    subdirs = ["cifar-10/cifar-10-batches-py", "cifar-10-batches-py", "cifar-10"]
    what = "CIFAR-10 python batch (cifar-10-python.tar.gz, extracted)"
    train = [_read_cifar_batch(_find(root, subdirs, f, what)) for f in CIFAR_FILES]
    test = _read_cifar_batch(_find(root, subdirs, "test_batch", what))

    def as_tensors(data, labels):
        x = torch.from_numpy(data).float().div_(255.0).reshape(-1, 3, 32, 32)
        return x, torch.from_numpy(labels)

    x_train, y_train = as_tensors(
        np.concatenate([d for d, _ in train]), np.concatenate([lab for _, lab in train])
    )
    return (x_train, y_train, *as_tensors(*test))


def _load_image_folder(root: Path, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """A class-per-folder tree decoded into memory as [0, 1] floats (centre crops)."""
    files, y, test_files, yt, classes = list_tree(root)
    plain = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    x = ImageStream(files, size, **plain)[:]
    xt = ImageStream(test_files, size, **plain)[:]
    return x, y, xt, yt, len(classes)


def _stream_image_folder(
    root: Path, size: int, n_val: int | float, seed: int, standardize: bool
) -> Dataset:
    """A class-per-folder tree as ImageStreams (decoded per batch), normalised with the
    ImageNet channel statistics when `standardize`."""
    files, y, test_files, yt, classes = list_tree(root)
    stats = {} if standardize else {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    stream = ImageStream(files, size, **stats)
    val, train = _split(len(files), n_val, seed)
    return Dataset(
        "imagenet", stream.subset(train), y[train], stream.subset(val), y[val],
        ImageStream(test_files, size, **stats), yt, len(classes),
    )  # fmt: skip


def _shape(x: Tensor) -> str:
    return "x".join(map(str, x.shape[2:])) + (
        f" with {x.shape[1]} channels" if x.shape[1] > 1 else ""
    )


def _split(n: int, val_size: int | float, seed: int) -> tuple[Tensor, Tensor]:
    """(validation, training) indices: a permutation seeded with `seed`."""
    n_val = round(val_size * n) if isinstance(val_size, float) else int(val_size)
    if not 0 <= n_val < n:
        raise ApicalError(f"val_size {val_size} leaves no training data ({n} training examples)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_val], perm[n_val:]


def _digits(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to [0, 1]); 360 held out as test
    by a fixed permutation (seed 0, independent of the run's seed)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    test, train = perm[:360], perm[360:]
    return x[train], y[train], x[test], y[test]


def _xor() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0])
    return x, y, x, y


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int | float = 0.1,
    seed: int = 0,
    standardize: bool = True,
    image_size: int = 64,
    device: torch.device | str = "cpu",
) -> Dataset:
    """Load a dataset by name, hold `val_size` training examples out (a count, or a fraction
    of the training set) by a permutation seeded with `seed`, and move it to `device`.

    With `standardize`, image channels get zero mean and unit variance over the training
    split. XOR has four points: its validation and test sets are those same four points.
    "imagefolder" reads a class-per-folder tree (ImageNet's train/ and val/ layout) into
    memory at `image_size` x `image_size` (shorter side resized, centre crop); "imagenet"
    reads the same layout as streams decoded per batch (any size of tree; ImageNet channel
    statistics). In both the tree's val/ split is the test set.
    """
    if name not in DATASETS:
        raise ApicalError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if name == "imagenet":
        data = _stream_image_folder(data_root(data_dir), image_size, val_size, seed, standardize)
        return data.to(device)
    if name == "xor":
        x, y, xt, yt = _xor()
        return Dataset(name, x, y, x, y, xt, yt, 2).to(device)
    n_classes = 10
    if name == "digits":
        x, y, xt, yt = _digits(seed)
    elif name == "imagefolder":
        x, y, xt, yt, n_classes = _load_image_folder(data_root(data_dir), image_size)
    elif name == "cifar10":
        x, y, xt, yt = _load_cifar10(data_root(data_dir))
    else:
        x, y, xt, yt = _load_idx_set(name, data_root(data_dir))
    if x.shape[1:] != xt.shape[1:]:
        raise ApicalError(
            f"{name}: the test images are {_shape(xt)} but the training images {_shape(x)}; "
            "the files do not belong together (use the test files of the same set)"
        )
    val, train = _split(len(x), val_size, seed)
    x_train, x_val = x[train], x[val]
    if standardize:
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        x_train, x_val, xt = ((a - mean) / std for a in (x_train, x_val, xt))
    return Dataset(name, x_train, y[train], x_val, y[val], xt, yt, n_classes).to(device)
