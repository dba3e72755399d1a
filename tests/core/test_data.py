"""Tests for ablate.core.data: splits, batching, augmentation and CIFAR loading (CPU, offline)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from ablate.core.data import (
    Dataset,
    DatasetError,
    DatasetMissingError,
    Split,
    augment_crop_flip,
    check_cifar,
    crop_flip_at,
    iterate_batches,
    load_cifar,
    load_dataset,
    load_digits,
    synthetic_cifar,
)
from tests.helpers import write_fake_cifar10


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits(seed=0)


def _rows(split: Split) -> set[bytes]:
    return {row.numpy().tobytes() for row in split.x.flatten(1)}


# --- digits -------------------------------------------------------------------------------------


def test_digits_sizes_types_and_range(digits: Dataset) -> None:
    sizes = [len(digits.train), len(digits.val), len(digits.test)]
    assert sum(sizes) == 1797
    assert sizes[2] == round(0.2 * 1797) and sizes[1] == round(0.15 * 1797)
    for s in (digits.train, digits.val, digits.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape[1:] == (1, 8, 8) and s.x.shape[0] == s.y.shape[0]
        assert s.x.min() >= 0.0 and s.x.max() <= 1.0
    assert digits.train.x.max() == 1.0  # pixels /16, not /255
    assert digits.image_shape == (1, 8, 8)
    assert digits.num_classes == 10 and digits.augment is False


def test_digits_splits_disjoint(digits: Dataset) -> None:
    from sklearn.datasets import load_digits as sk

    # The raw set has a few duplicate images, so disjointness is checked on the original
    # indices, recovered by matching each row (with its label) against the source.
    images = sk().images.reshape(1797, -1).astype(np.float32) / 16
    target = sk().target
    lookup: dict[bytes, list[int]] = {}
    for i, (row, t) in enumerate(zip(images, target, strict=True)):
        lookup.setdefault(row.tobytes() + bytes([t]), []).append(i)
    used: list[int] = []
    for s in (digits.train, digits.val, digits.test):
        for row, t in zip(s.x.flatten(1).numpy(), s.y.numpy(), strict=True):
            used.append(lookup[row.tobytes() + bytes([int(t)])].pop())
    assert sorted(used) == list(range(1797))


def test_digits_stratified(digits: Dataset) -> None:
    overall = torch.bincount(digits.train.y, minlength=10).float() / len(digits.train)
    for s in (digits.val, digits.test):
        counts = torch.bincount(s.y, minlength=10)
        assert (counts > 0).all()
        assert torch.allclose(counts.float() / len(s), overall, atol=0.02)


def test_digits_seeded(digits: Dataset) -> None:
    again = load_digits(seed=0)
    other = load_digits(seed=1)
    assert torch.equal(again.train.x, digits.train.x) and torch.equal(again.val.y, digits.val.y)
    assert torch.equal(again.test.x, digits.test.x)
    assert not torch.equal(other.test.x, digits.test.x)
    assert _rows(other.val) != _rows(digits.val)


def test_digits_int_val_size() -> None:
    ds = load_digits(val_size=100, seed=0)
    assert len(ds.val) == 100 and len(ds.train) + len(ds.val) + len(ds.test) == 1797


def test_load_dataset_dispatch() -> None:
    assert load_dataset("digits").name == "digits"
    syn = load_dataset("synthetic", synthetic_size=(20, 10, 10))
    assert [len(syn.train), len(syn.val), len(syn.test)] == [20, 10, 10]
    with pytest.raises(ValueError, match="imagenet"):
        load_dataset("imagenet")


# --- Split --------------------------------------------------------------------------------------


def test_split_subset_and_to(digits: Dataset) -> None:
    s = digits.train
    sub = s.subset(10)
    assert len(sub) == 10 and torch.equal(sub.x, s.x[:10]) and torch.equal(sub.y, s.y[:10])
    assert s.subset(None) is s and s.subset(len(s)) is s and s.subset(10**6) is s
    assert len(s.subset(0)) == 0
    moved = digits.to("cpu")
    assert moved.train.x.device.type == "cpu" and len(moved.test) == len(digits.test)


# --- iterate_batches ----------------------------------------------------------------------------


def _toy(n: int = 23) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone(),
                 torch.arange(n))


def test_iterate_covers_each_sample_once() -> None:
    split = _toy()
    batches = list(iterate_batches(split, 5, shuffle=True,
                                   generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    ys = torch.cat([y for _, y in batches])
    assert sorted(ys.tolist()) == list(range(23))
    assert ys.tolist() != list(range(23))  # actually shuffled
    for x, y in batches:  # images stay paired with their labels
        assert torch.equal(x[:, 0, 0, 0], y.float())


def test_iterate_seeded_order_and_no_shuffle() -> None:
    split = _toy()

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in iterate_batches(split, 4, shuffle=True,
                                                        generator=gen)]).tolist()

    assert order(3) == order(3)
    assert order(3) != order(4)
    plain = torch.cat([y for _, y in iterate_batches(split, 4, shuffle=False)])
    assert plain.tolist() == list(range(23))


def test_iterate_drop_last_and_augment() -> None:
    split = _toy()
    batches = list(iterate_batches(split, 5, shuffle=False, drop_last=True))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5]
    aug = list(iterate_batches(split, 8, shuffle=True, augment=True,
                               generator=torch.Generator().manual_seed(0)))
    assert all(x.shape[1:] == (1, 4, 4) for x, _ in aug)
    assert sum(len(y) for _, y in aug) == 23


# --- augmentation -------------------------------------------------------------------------------


def test_crop_flip_at_matches_hand_computation() -> None:
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    x = x.expand(4, 1, 3, 3)
    top = torch.tensor([0, 2, 1, 0])
    left = torch.tensor([0, 2, 1, 1])
    flip = torch.tensor([False, False, False, True])
    out = crop_flip_at(x, top, left, flip, padding=1)
    expected = torch.tensor([
        [[0, 0, 0], [0, 1, 2], [0, 4, 5]],  # shifted down-right by one: top-left padding shows
        [[5, 6, 0], [8, 9, 0], [0, 0, 0]],  # shifted up-left
        [[1, 2, 3], [4, 5, 6], [7, 8, 9]],  # centre crop = original
        [[0, 0, 0], [3, 2, 1], [6, 5, 4]],  # shifted down, then mirrored
    ], dtype=torch.float32).unsqueeze(1)
    assert torch.equal(out, expected)


def test_augment_identity_and_pure_flip() -> None:
    x = torch.rand(6, 3, 8, 8)
    assert torch.equal(augment_crop_flip(x, padding=0, flip_prob=0.0), x)
    assert torch.equal(augment_crop_flip(x, padding=0, flip_prob=1.0), x.flip(3))


def test_augment_shape_range_determinism_and_change() -> None:
    x = torch.rand(64, 3, 32, 32)
    a = augment_crop_flip(x, generator=torch.Generator().manual_seed(1))
    b = augment_crop_flip(x, generator=torch.Generator().manual_seed(1))
    c = augment_crop_flip(x, generator=torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    changed = (a != x).flatten(1).any(1)
    assert changed.sum() > 32  # only the centre crop without a flip leaves an image unchanged


def test_augment_outputs_are_crops_of_the_padded_input() -> None:
    # Independent check of the random path: every output equals some crop (+ optional mirror)
    # of its zero-padded input, found by brute force.
    x = torch.rand(16, 2, 5, 5)
    p = 2
    out = augment_crop_flip(x, padding=p, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(len(x)):
        candidates = [crop for t in range(2 * p + 1) for l_ in range(2 * p + 1)
                      for crop in (padded[i, :, t:t + 5, l_:l_ + 5],
                                   padded[i, :, t:t + 5, l_:l_ + 5].flip(2))]
        assert any(torch.equal(out[i], c) for c in candidates)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_cifar() -> None:
    ds = synthetic_cifar(n_train=40, n_val=20, n_test=30, seed=0)
    assert ds.image_shape == (3, 32, 32) and ds.augment and ds.num_classes == 10
    assert [len(ds.train), len(ds.val), len(ds.test)] == [40, 20, 30]
    for s in (ds.train, ds.val, ds.test):
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.min() >= 0 and s.x.max() <= 1
        assert set(s.y.tolist()) == set(range(10))
    again = synthetic_cifar(n_train=40, n_val=20, n_test=30, seed=0)
    assert torch.equal(again.train.x, ds.train.x)
    # Learnable: class means differ far more than the noise averages out to.
    means = torch.stack([ds.train.x[ds.train.y == k].mean(0) for k in range(10)])
    assert (means[0] - means[1]).abs().mean() > 0.05


# --- CIFAR --------------------------------------------------------------------------------------


def test_load_cifar_missing(tmp_path) -> None:
    with pytest.raises(DatasetMissingError) as info:
        load_cifar("cifar10", root=str(tmp_path), download=False, val_size=0.1, seed=0)
    msg = str(info.value)
    assert str(tmp_path) in msg and "download" in msg and "cifar-10-batches-py" in msg
    assert "\n" not in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetMissingError):
        load_dataset("cifar100", root=str(tmp_path))


def test_load_cifar_fake_folder(tmp_path) -> None:
    write_fake_cifar10(str(tmp_path))
    ds = load_cifar("cifar10", root=str(tmp_path), download=False, val_size=0.2, seed=0)
    assert ds.num_classes == 10 and ds.augment and ds.image_shape == (3, 32, 32)
    assert [len(ds.train), len(ds.val), len(ds.test)] == [80, 20, 30]
    assert ds.train.x.dtype == torch.float32 and ds.train.y.dtype == torch.int64
    assert ds.train.x.min() >= 0 and ds.train.x.max() <= 1
    # Stored as the files' uint8 bytes: a quarter of float32 on the GPU.
    assert all(s.pixels.dtype == torch.uint8 for s in (ds.train, ds.val, ds.test))
    assert ds.train.pixels.untyped_storage().nbytes() == 80 * 3072
    assert torch.bincount(ds.val.y, minlength=10).tolist() == [2] * 10  # stratified
    # Test set is the official one, in order; pixels are exactly uint8 / 255 in CHW layout.
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    expected = torch.from_numpy(raw["data"].reshape(-1, 3, 32, 32)).float() / 255
    assert torch.equal(ds.test.x, expected) and ds.test.y.tolist() == raw["labels"]
    # Validation is carved out of train: together they are exactly the 100 training images.
    train_rows = set()
    for i in range(1, 6):
        with open(tmp_path / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            train_rows |= {r.tobytes() for r in pickle.load(f)["data"]}
    got = {(r * 255).round().to(torch.uint8).numpy().tobytes()
           for s in (ds.train, ds.val) for r in s.x.flatten(1)}
    assert got == train_rows and _rows(ds.train).isdisjoint(_rows(ds.val))
    again = load_dataset("cifar10", root=str(tmp_path), val_size=20, seed=0)
    assert torch.equal(again.val.x, ds.val.x)


def test_uint8_cifar_gives_the_batches_of_the_float_path(tmp_path) -> None:
    """The same seed gives bit-identical batches (order, crops, flips, values) from the uint8
    pixels as from the float32 images the loader used to store; on CUDA the pixels are crop-
    flipped on the device before conversion, here on the CPU by the same code."""
    write_fake_cifar10(str(tmp_path))
    ds = load_cifar("cifar10", root=str(tmp_path), download=False, val_size=0.2, seed=0)
    as_floats = Split(ds.train.pixels.float() / 255, ds.train.y)
    assert as_floats.pixels.dtype == torch.float32

    def batches(split: Split) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(3)
        return list(iterate_batches(split, 16, shuffle=True, generator=gen, augment=True))

    got, want = batches(ds.train), batches(as_floats)
    assert len(got) == len(want) == 5
    for (x, y), (xf, yf) in zip(got, want, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, xf) and torch.equal(y, yf)
    # The augmentation really ran: zero padding shows up in some crop.
    assert any((x == 0).all(dim=(1, 2)).any() for x, _ in got)


def test_load_cifar_refuses_code_in_pickles(tmp_path) -> None:
    write_fake_cifar10(str(tmp_path))
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": os.getcwd, "labels": []}, f)  # references a global function
    with pytest.raises(DatasetError, match="data_batch_3.*refusing to unpickle (posix|nt)"):
        load_cifar("cifar10", root=str(tmp_path), download=False, val_size=0.1, seed=0)


def test_download_only_fetches_missing_files(tmp_path, monkeypatch) -> None:
    """data.download=true downloads the archive once; the files are then read by the restricted
    unpickler (torchvision's dataset class, which uses pickle.load, is never instantiated)."""
    calls = []

    def fake_download(url: str, root: str, filename: str, md5: str) -> None:
        calls.append(filename)
        write_fake_cifar10(root)

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    monkeypatch.setattr("torchvision.datasets.CIFAR10.__init__", None)  # would fail if used
    for _ in range(2):
        ds = load_cifar("cifar10", root=str(tmp_path), download=True, val_size=20, seed=0)
        assert [len(ds.train), len(ds.val)] == [80, 20]
    assert calls == ["cifar-10-python.tar.gz"]


def test_check_cifar_reads_every_batch_safely(tmp_path) -> None:
    write_fake_cifar10(str(tmp_path))
    assert check_cifar("cifar10", str(tmp_path)) == 100  # training images
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, f, protocol=2)
    with pytest.raises(DatasetError, match="test_batch: labels outside"):
        check_cifar("cifar10", str(tmp_path))
