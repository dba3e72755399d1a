"""Fashion-MNIST (Xiao et al. 2017: 70,000 28x28 grey images of 10 kinds of clothing) from its
original idx files, gzipped or not.

Where the files are looked for, in order: torchvision's raw layout under ``root``
(``ROOT/FashionMNIST/raw/``), the four files directly in ``root``, and then the ``fallback``
folders (Debian's ``dataset-fashion-mnist`` package puts them in ``/usr/share/datasets/
fashion-mnist``). Every file's magic number, image count and shape are checked against its
length before a byte is used: a damaged or truncated file is one :class:`DatasetError` naming
it, never a silently short dataset. torchvision only downloads.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ablate.core.catalog import DATASETS
from ablate.core.errors import DatasetError, DatasetMissingError, one_line
from ablate.core.splits import Dataset, Split, count, stratified_holdout

APT_PACKAGE = "dataset-fashion-mnist"  # its files: DATASETS["fashion_mnist"].system_dirs
RAW_DIR = ("FashionMNIST", "raw")  # torchvision's layout under data.root
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
SIZES = {"train": 60_000, "test": 10_000}
SIDE, CLASSES = 28, 10
_MAGIC = {1: 2049, 3: 2051}  # idx magic numbers: unsigned bytes, 1 (labels) or 3 (images) dims


def find_files(root: str, fallback: Sequence[str] = ()) -> dict[str, Path]:
    """The four files, each as found (``.gz`` or not), from the first folder that holds all
    four; a one-line :class:`DatasetMissingError` naming where it looked and how to get them."""
    base = Path(root).expanduser().absolute()
    folders = [base.joinpath(*RAW_DIR), base, *(Path(f) for f in fallback)]
    for folder in folders:
        found = {key: _one(folder, name) for key, name in FILES.items()}
        if all(found.values()):
            return {k: v for k, v in found.items() if v is not None}
    raise DatasetMissingError(
        f"fashion_mnist not found: looked for {', '.join(FILES.values())} (.gz or not) in "
        f"{', '.join(map(str, folders))}; install Debian's {APT_PACKAGE} (apt-get install "
        f"{APT_PACKAGE}), put them in {base.joinpath(*RAW_DIR)} (torchvision's layout), or "
        "set data.download=true on an online machine")


def _one(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, dims: int, expected: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``dims`` dimensions (1: labels; 3: images, 28x28)
    and ``expected`` items, as a uint8 array; anything else is a :class:`DatasetError`."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # a damaged or cut gzip stream
        raise DatasetError(f"{path}: not a readable idx file: {one_line(exc)}") from None
    header = 4 + 4 * dims
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != _MAGIC[dims]:
        raise DatasetError(f"{path}: not an idx file of {dims}-dimensional unsigned bytes "
                           f"(magic number {_MAGIC[dims]} expected)")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    want = (expected, SIDE, SIDE)[:dims]
    if shape != want:
        raise DatasetError(f"{path}: shape {shape}, expected {want}")
    size = int(np.prod(shape))
    if len(raw) != header + size:
        raise DatasetError(f"{path}: {len(raw) - header} bytes of data, expected {size} "
                           "(truncated or padded)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_files(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of both splits, checked."""
    out: dict[str, np.ndarray] = {}
    for part, n in SIZES.items():
        x = read_idx(files[f"{part}_images"], 3, n)
        y = read_idx(files[f"{part}_labels"], 1, n).astype(np.int64)
        if y.max(initial=0) >= CLASSES:
            raise DatasetError(f"{files[f'{part}_labels']}: labels outside [0, {CLASSES})")
        out[f"{part}_images"], out[f"{part}_labels"] = x[:, None], y
    return out


def check_fashion_mnist(root: str, fallback: Sequence[str] = ()) -> int:
    """The four files are there and read as Fashion-MNIST (checked as for loading); returns
    the number of training images."""
    return len(read_files(find_files(root, fallback))["train_labels"])


def download(root: str) -> None:
    """torchvision's downloader into ``ROOT/FashionMNIST/raw`` (it checks each file's md5)."""
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(Path(root).expanduser()), train=True, download=True)
    except (RuntimeError, OSError) as exc:  # OSError covers URLError when offline
        raise DatasetMissingError(f"fashion_mnist: download into {root} failed "
                                  f"({one_line(exc)})") from None


def load_fashion_mnist(*, root: str, download_missing: bool, val_size: int | float, seed: int,
                       fallback: Sequence[str] = ()) -> Dataset:
    """Fashion-MNIST as uint8 pixels: validation a stratified, seeded hold-out of ``val_size``
    from the 60,000 training images, test the 10,000 t10k images in their order."""
    try:
        files = find_files(root, fallback)
    except DatasetMissingError:
        if not download_missing:
            raise
        download(root)
        files = find_files(root)
    data = read_files(files)
    x, y = data["train_images"], data["train_labels"]
    tr, va = stratified_holdout(y, count(val_size, len(y)), seed)

    def split(xa: np.ndarray, ya: np.ndarray, idx: np.ndarray | slice) -> Split:
        # a copy: the file's bytes are a read-only buffer
        return Split(torch.from_numpy(np.array(xa[idx])), torch.from_numpy(np.array(ya[idx])))

    return Dataset("fashion_mnist", split(x, y, tr), split(x, y, va),
                   split(data["test_images"], data["test_labels"], slice(None)),
                   num_classes=CLASSES, augment=DATASETS["fashion_mnist"].augment)
