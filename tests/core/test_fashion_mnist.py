"""Fashion-MNIST from its idx files: every layout it may sit in, the checks that refuse a
damaged file, and the real files of Debian's dataset-fashion-mnist (CI installs the package and
sets ABLATE_REQUIRE_FASHION_MNIST=1, under which their absence fails instead of skipping)."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.core.catalog import DATASETS
from ablate.core.data import check_files, load_dataset
from ablate.core.errors import DatasetError, DatasetMissingError
from ablate.core.fashion_mnist import APT_PACKAGE, FILES, check_fashion_mnist, load_fashion_mnist
from tests.helpers import (
    fake_fashion_mnist,
    idx_bytes,
    require_fashion_mnist,
    write_fashion_mnist,
)

SYSTEM = Path(DATASETS["fashion_mnist"].system_dirs[0])


@pytest.fixture(scope="module")
def fake() -> dict[str, np.ndarray]:
    return fake_fashion_mnist()


def test_reads_torchvisions_layout_and_a_flat_folder_alike(tmp_path, fake) -> None:
    write_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", fake, gz=True)
    write_fashion_mnist(tmp_path / "flat", fake, gz=False)
    a = load_fashion_mnist(root=str(tmp_path / "tv"), download_missing=False, val_size=1000,
                           seed=0)
    b = load_fashion_mnist(root=str(tmp_path / "flat"), download_missing=False, val_size=1000,
                           seed=0)
    assert [len(a.train), len(a.val), len(a.test)] == [59_000, 1000, 10_000]
    for s, t in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(s.pixels, t.pixels) and torch.equal(s.y, t.y)
    info = DATASETS["fashion_mnist"]  # the registry says what the loader gives
    assert a.image_shape == (info.channels, info.side, info.side) and a.train.pixels.dtype == \
        torch.uint8
    assert (a.num_classes, a.augment) == (info.classes, info.augment)
    assert torch.bincount(a.val.y).tolist() == [100] * 10  # stratified
    # test: the t10k file in its order; each image is the file's (first pixel = index mod 251)
    assert a.test.pixels[:, 0, 0, 0].tolist() == (np.arange(10_000) % 251).tolist()
    assert a.test.y.tolist() == (np.arange(10_000) % 10).tolist()
    # train + val are exactly the 60,000 training images
    firsts = torch.cat([a.train.pixels[:, 0, 0, 0], a.val.pixels[:, 0, 0, 0]]).int()
    labels = torch.cat([a.train.y, a.val.y])
    assert sorted(zip(firsts.tolist(), labels.tolist(), strict=True)) == sorted(
        zip((np.arange(60_000) % 251).tolist(), (np.arange(60_000) % 10).tolist(), strict=True))
    assert check_fashion_mnist(str(tmp_path / "flat")) == 60_000


def test_missing_files_name_the_package_the_layout_and_download(tmp_path) -> None:
    with pytest.raises(DatasetMissingError) as info:
        load_fashion_mnist(root=str(tmp_path), download_missing=False, val_size=10, seed=0)
    message = str(info.value)
    assert "\n" not in message and APT_PACKAGE in message and "data.download" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


@pytest.mark.parametrize("damage", ["magic", "count", "truncated", "padded", "label",
                                    "bad_gzip"])
def test_a_damaged_file_is_one_error_naming_it(tmp_path, fake, damage: str) -> None:
    arrays = dict(fake)
    folder = write_fashion_mnist(tmp_path, arrays, gz=False)
    target = folder / FILES["train_images"]
    blob = bytearray(target.read_bytes())
    if damage == "magic":
        blob[2] = 0x09  # signed bytes
    elif damage == "count":
        blob[4:8] = struct.pack(">I", 59_999)
    elif damage == "truncated":
        blob = blob[:-784]
    elif damage == "padded":
        blob += b"\0"
    elif damage == "label":
        target = folder / FILES["train_labels"]
        labels = arrays["train_labels"].copy()
        labels[7] = 10
        blob = bytearray(idx_bytes(labels))
    elif damage == "bad_gzip":
        target.unlink()
        target = folder / f"{FILES['train_images']}.gz"
        blob = bytearray(gzip.compress(bytes(blob))[:-100])
    target.write_bytes(bytes(blob))
    for read in (lambda: check_files("fashion_mnist", str(tmp_path)),  # what the CLI checks
                 lambda: load_fashion_mnist(root=str(tmp_path), download_missing=False,
                                            val_size=10, seed=0)):
        with pytest.raises(DatasetError) as info:
            read()
        assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_root_first_then_the_system_folder(tmp_path, fake) -> None:
    """A folder given as root wins over the fallback; without the files there the fallback
    is read."""
    write_fashion_mnist(tmp_path / "mine", fake, gz=True)
    other = fake_fashion_mnist()
    other["test_labels"] = (other["test_labels"] + 1) % 10
    write_fashion_mnist(tmp_path / "system", other, gz=True)
    mine = load_fashion_mnist(root=str(tmp_path / "mine"), download_missing=False,
                              val_size=10, seed=0, fallback=[str(tmp_path / "system")])
    system = load_fashion_mnist(root=str(tmp_path / "none"), download_missing=False,
                                val_size=10, seed=0, fallback=[str(tmp_path / "system")])
    assert mine.test.y[0] == 0 and system.test.y[0] == 1


def test_the_real_files_load_through_the_config_default(tmp_path, monkeypatch) -> None:
    """With data.root at its default (no ./data here), load_dataset reads Debian's copy: the
    real 70,000 images, the test split in the file's order and byte for byte."""
    require_fashion_mnist()
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("fashion_mnist", val_size=5000, seed=0)
    assert [len(ds.train), len(ds.val), len(ds.test)] == [55_000, 5000, 10_000]
    assert torch.bincount(ds.val.y).tolist() == [500] * 10
    assert torch.bincount(torch.cat([ds.train.y, ds.val.y])).tolist() == [6000] * 10
    with gzip.open(SYSTEM / f"{FILES['test_images']}.gz") as f:
        raw = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    assert torch.equal(ds.test.pixels[:, 0], torch.from_numpy(raw.copy()))
    assert 0.28 < ds.train.x[:2000].mean() < 0.29  # Fashion-MNIST's mean pixel is 0.286
    # the same files, gunzipped into torchvision's layout, load identically
    raw_dir = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in FILES.values():
        with gzip.open(SYSTEM / f"{name}.gz") as src, open(raw_dir / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    again = load_dataset("fashion_mnist", root=str(tmp_path / "tv"), val_size=5000, seed=0)
    assert torch.equal(again.val.pixels, ds.val.pixels) and torch.equal(again.val.y, ds.val.y)
