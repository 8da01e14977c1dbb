"""Data readers: IDX and CIFAR-10 files written here round-trip exactly; truncated, corrupt
and missing files give one clear line; the validation split is seeded and disjoint; the real
MNIST and Fashion-MNIST files have their documented shapes and label counts."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from apical.data import load_dataset, read_idx
from apical.errors import ApicalError
from tests.conftest import dataset_dir


def write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_set(folder, n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (images, labels)
    return arrays


def test_idx_round_trip(tmp_path):
    arrays = make_idx_set(tmp_path / "mnist")
    data = load_dataset("mnist", tmp_path, val_size=5, seed=3, standardize=False)
    assert data.x_train.shape == (25, 1, 28, 28) and data.x_val.shape == (5, 1, 28, 28)
    images, labels = arrays["t10k"]
    torch.testing.assert_close(data.x_test[:, 0], torch.from_numpy(images).float() / 255)
    assert torch.equal(data.y_test, torch.from_numpy(labels).long())
    # train + val is a permutation of the training file
    all_x = torch.cat([data.x_train, data.x_val]).flatten(1)
    ref = torch.from_numpy(arrays["train"][0]).float().flatten(1) / 255
    assert sorted(map(tuple, all_x.tolist())) == sorted(map(tuple, ref.tolist()))


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=40)
    a = load_dataset("mnist", tmp_path, val_size=0.25, seed=1)
    b = load_dataset("mnist", tmp_path, val_size=0.25, seed=1)
    c = load_dataset("mnist", tmp_path, val_size=0.25, seed=2)
    assert len(a.x_val) == 10
    assert torch.equal(a.x_val, b.x_val) and not torch.equal(a.x_val, c.x_val)
    val_rows = {tuple(r) for r in a.x_val.flatten(1).tolist()}
    assert not val_rows & {tuple(r) for r in a.x_train.flatten(1).tolist()}


def test_standardisation_uses_training_statistics_only(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=40)
    raw = load_dataset("mnist", tmp_path, val_size=10, seed=1, standardize=False)
    std = load_dataset("mnist", tmp_path, val_size=10, seed=1)
    mean, sd = raw.x_train.mean(), raw.x_train.std()
    assert std.x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert std.x_train.std().item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(std.x_val, (raw.x_val - mean) / sd)
    torch.testing.assert_close(std.x_test, (raw.x_test - mean) / sd)


def test_files_directly_in_the_named_folder(tmp_path):
    make_idx_set(tmp_path)  # no mnist/ subfolder: the user pointed at the folder itself
    assert load_dataset("fashion-mnist", tmp_path, val_size=0).x_train.shape[0] == 30


def test_missing_file_names_file_and_places(tmp_path):
    make_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ApicalError) as e:
        load_dataset("mnist", tmp_path)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz not found" in msg and str(tmp_path / "mnist") in msg
    assert "\n" not in msg


def test_truncated_gzip(tmp_path):
    make_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ApicalError, match="truncated or not gzip"):
        load_dataset("mnist", tmp_path)


def test_truncated_data_inside_a_valid_gzip(tmp_path):
    make_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ApicalError, match=r"header \(30, 28, 28\) needs 23520"):
        load_dataset("mnist", tmp_path)


def test_wrong_magic_and_not_gzip(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">II", 0x0801, 3) + b"abc")
    with pytest.raises(ApicalError, match="magic 0x801, expected 0x803"):
        read_idx(path, 3)
    raw = tmp_path / "raw"
    write_idx(raw, np.zeros((2, 2, 2)), gz=False)
    with pytest.raises(ApicalError, match="not gzip"):
        read_idx(raw, 3)


def test_labels_and_images_must_match(tmp_path):
    make_idx_set(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz", np.zeros(7))
    with pytest.raises(ApicalError, match="10 images but 7 labels"):
        load_dataset("mnist", tmp_path)


def write_cifar(folder, n=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"x"}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10}, f)
    return batches


def test_cifar10_reader_in_the_official_layout(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path, val_size=10, standardize=False)
    assert data.x_train.shape == (90, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    raw, labels = batches["test_batch"]
    # row = 1024 red, then 1024 green, then 1024 blue values, each in row order
    assert data.x_test[0, 1, 0, 5].item() == pytest.approx(raw[0, 1024 + 5] / 255)
    assert data.x_test[3, 2, 31, 31].item() == pytest.approx(raw[3, 3071] / 255)
    assert data.y_test.tolist() == labels


def test_cifar10_corrupt_and_missing(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ApicalError, match="data_batch_3 is truncated or not a CIFAR-10"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(ApicalError, match="data_batch_3 not found"):
        load_dataset("cifar10", tmp_path)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, f)
    with pytest.raises(ApicalError, match=r"data shape \(5, 100\)"):
        load_dataset("cifar10", tmp_path)


def test_no_data_dir_and_unknown_dataset(monkeypatch):
    monkeypatch.delenv("APICAL_DATA", raising=False)
    with pytest.raises(ApicalError, match="set APICAL_DATA"):
        load_dataset("mnist")
    with pytest.raises(ApicalError, match="known datasets: digits, xor, mnist"):
        load_dataset("imagenet2")


def test_builtin_sets_need_no_download(monkeypatch):
    monkeypatch.delenv("APICAL_DATA", raising=False)
    digits = load_dataset("digits", val_size=144, standardize=False)
    assert digits.x_train.shape == (1293, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    xor = load_dataset("xor")
    assert xor.y_train.tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_files(name):
    folder = dataset_dir(name)
    images = read_idx(folder / "train-images-idx3-ubyte.gz", 3)
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz", 1)
    test_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", 1)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert test_labels.shape == (10000,)
    counts = np.bincount(test_labels, minlength=10)
    if name == "mnist":  # documented in shared/data/README.md
        assert counts[5] == 892 and counts[1] == 1135
    else:
        assert (counts == 1000).all() and (np.bincount(labels) == 6000).all()
    data = load_dataset(name, folder.parent, val_size=10000)
    assert data.x_train.shape == (50000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)


def write_image_tree(root, classes=("cat", "dog", "eel"), per_class=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = {}
    for split in ("train", "val"):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class if split == "train" else 1):
                # a flat colour per class, on images of varying size and aspect ratio
                colour = (80 * k + 20, 255 - 70 * k, 40 + 60 * k)
                colours[name] = colour
                w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
                Image.new("RGB", (w, h), colour).save(folder / f"{i}.jpg", quality=95)
    return colours


def test_image_folder_reader_on_generated_jpegs(tmp_path):
    colours = write_image_tree(tmp_path / "imagenet")
    (tmp_path / "imagenet" / "train" / "notes.txt").write_text("not an image folder entry")
    data = load_dataset("imagefolder", tmp_path, val_size=2, image_size=16, standardize=False)
    assert data.n_classes == 3
    assert data.x_train.shape == (7, 3, 16, 16) and data.x_val.shape == (2, 3, 16, 16)
    assert data.x_test.shape == (3, 3, 16, 16) and data.y_test.tolist() == [0, 1, 2]
    for k, name in enumerate(("cat", "dog", "eel")):
        mean = data.x_test[k].mean(dim=(1, 2)) * 255
        assert torch.allclose(mean, torch.tensor(colours[name], dtype=torch.float32), atol=3)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ApicalError, match="expected a class-per-folder tree with train/ and val/"):
        load_dataset("imagefolder", tmp_path)
    write_image_tree(tmp_path)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ApicalError, match=r"broken\.jpg is not a readable image"):
        load_dataset("imagefolder", tmp_path, val_size=1)


def test_imagenet_stream_decodes_per_batch(tmp_path):
    from apical.augment import training_batch
    from apical.images import IMAGENET_MEAN, IMAGENET_STD, ImageStream

    write_image_tree(tmp_path, per_class=4)
    stream = load_dataset("imagenet", tmp_path, val_size=3, image_size=16)
    memory = load_dataset("imagefolder", tmp_path, val_size=3, image_size=16, standardize=False)
    assert isinstance(stream.x_train, ImageStream) and stream.x_train.shape == (9, 3, 16, 16)
    assert stream.n_classes == 3 and torch.equal(stream.y_train, memory.y_train)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    # same files, same centre crops, ImageNet statistics
    torch.testing.assert_close(stream.x_test[:], (memory.x_test - mean) / std)
    torch.testing.assert_close(
        stream.x_val[torch.tensor([2, 0])], (memory.x_val[[2, 0]] - mean) / std
    )
    # training crops: every draw from the generator (noise images, so crops differ)
    from PIL import Image

    rng = np.random.default_rng(0)
    for f in stream.x_train.files:
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(f, quality=95)
    idx = torch.tensor([0, 5, 8])
    gens = {"decode": torch.Generator().manual_seed(1)}
    a = training_batch("resized_crop_flip", stream.x_train, idx, gens)
    b = training_batch(
        "resized_crop_flip", stream.x_train, idx, {"decode": torch.Generator().manual_seed(1)}
    )
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    c = training_batch(
        "resized_crop_flip", stream.x_train, idx, {"decode": torch.Generator().manual_seed(2)}
    )
    assert not torch.equal(a, c)
    assert not torch.equal(a, stream.x_train[idx])  # not the centre crops
    with pytest.raises(ApicalError, match="needs dataset 'imagenet'"):
        training_batch("resized_crop_flip", memory.x_train, idx, gens)
