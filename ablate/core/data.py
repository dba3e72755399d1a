"""The datasets a config may name, loaded as in-memory tensors (:mod:`.splits`): the bundled
digits, CIFAR-10/100 (:mod:`.cifar`), Fashion-MNIST (:mod:`.fashion_mnist`) and a synthetic
stand-in; and the batches of a split.

:func:`iterate_batches` serves batches by index straight from (GPU) memory, without DataLoader
worker processes, crops and flips them on that device and only then converts them to float32 in
[0, 1]: uint8 pixels (CIFAR, Fashion-MNIST) stay a quarter of float32's size until then.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ablate.core.catalog import DATASETS, DEFAULT_DATA_ROOT, DatasetInfo
from ablate.core.cifar import check_cifar, load_cifar
from ablate.core.errors import DatasetError, DatasetMissingError
from ablate.core.fashion_mnist import check_fashion_mnist, load_fashion_mnist
from ablate.core.splits import Dataset, Split, as_float, count, float_split, stratified_holdout

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetMissingError",
    "Split",
    "as_float",
    "augment_crop_flip",
    "check_cifar",
    "check_files",
    "check_split",
    "crop_flip_at",
    "dataset_shape",
    "iterate_batches",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "synthetic_cifar",
]

DIGITS_IMAGES, DIGITS_TEST = 1797, 0.2  # sklearn's digits; the test share load_digits holds out
SYNTHETIC_SIZES = (256, 64, 64)  # train, val, test images of data.name=synthetic


def dataset_shape(name: str) -> tuple[int, int]:
    """(input channels, classes) of dataset ``name`` (:data:`~ablate.core.catalog.DATASETS`)."""
    info = _info(name)
    return info.channels, info.classes


def _info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def check_split(name: str, val_size: int | float, train_images: int | None = None) -> None:
    """ValueError unless the stratified validation hold-out of ``val_size`` (as
    :func:`load_dataset` takes it) leaves at least one image per class on both sides; sklearn
    would otherwise fail deep inside the split, or validation would be empty.
    ``train_images``: the size of a training set on disk when known (else the official one)."""
    if name == "synthetic":  # fixed sizes, val_size unused
        return
    classes = dataset_shape(name)[1]
    if name == "digits":  # a fraction is of the whole set; the hold-out comes from the rest
        pool = DIGITS_IMAGES - count(DIGITS_TEST, DIGITS_IMAGES)
        held = count(val_size, DIGITS_IMAGES)
    else:
        pool = train_images or _info(name).train_images or 0
        held = count(val_size, pool)
    if not classes <= held <= pool - classes:
        raise ValueError(f"{val_size:g} holds out {held} of the {pool} training images of "
                         f"{name}; the stratified hold-out needs {classes} to {pool - classes}")


def check_files(name: str, root: str) -> int:
    """The files of an on-disk dataset are there and read safely, as for loading (a damaged or
    hostile file is refused before anything starts); returns its training images."""
    if name == "fashion_mnist":
        return check_fashion_mnist(root, DATASETS[name].system_dirs)
    return check_cifar(name, root)


def load_dataset(name: str, *, root: str = DEFAULT_DATA_ROOT, download: bool = False,
                 val_size: int | float = 0.1, seed: int = 0,
                 synthetic_size: tuple[int, int, int] = SYNTHETIC_SIZES) -> Dataset:
    """Load ``name`` (:data:`~ablate.core.catalog.DATASETS`); files are read from ``root``
    (and a dataset's system folders), downloaded first with ``download`` when missing."""
    if name == "digits":
        return load_digits(val_size=val_size, seed=seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root=root, download=download, val_size=val_size, seed=seed)
    if name == "fashion_mnist":
        return load_fashion_mnist(root=root, download_missing=download, val_size=val_size,
                                  seed=seed, fallback=DATASETS[name].system_dirs)
    if name == "synthetic":
        n_train, n_val, n_test = synthetic_size
        return synthetic_cifar(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def load_digits(*, val_size: int | float = 0.15, test_size: float = 0.2, seed: int = 0) -> Dataset:
    """sklearn's bundled 8x8 digits (1,797 images, works offline), split train/val/test.

    ``test_size`` and a float ``val_size`` are fractions of the whole set; both hold-outs are
    stratified and fixed by ``seed``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # pixels are 0..16
    y = bunch.target.astype(np.int64)
    n = len(y)
    rest, test_idx = stratified_holdout(y, count(test_size, n), seed)
    tr, va = stratified_holdout(y[rest], count(val_size, n), seed)
    return Dataset("digits", float_split(x, y, rest[tr]), float_split(x, y, rest[va]),
                   float_split(x, y, test_idx), num_classes=10,
                   augment=DATASETS["digits"].augment)


def synthetic_cifar(*, n_train: int, n_val: int, n_test: int, num_classes: int = 10,
                    seed: int = 0) -> Dataset:
    """Random CIFAR-shaped data for shape tests and benchmarks.

    Each class has a smooth (4x4 upsampled) mean pattern plus pixel noise, so a model can learn
    it and crop/flip augmentation does not wipe the signal out.
    """
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=g)
    means = 0.25 + 0.5 * F.interpolate(coarse, size=(32, 32), mode="bilinear",
                                       align_corners=False)

    def make(n: int) -> Split:
        # Balanced labels in random order: every class appears once n >= num_classes.
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        noise = 0.15 * torch.randn(n, 3, 32, 32, generator=g)
        return Split((means[y] + noise).clamp_(0.0, 1.0), y.to(torch.int64))

    return Dataset("synthetic", make(n_train), make(n_val), make(n_test),
                   num_classes=num_classes, augment=DATASETS["synthetic"].augment)


def crop_flip_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                 *, padding: int) -> torch.Tensor:
    """Crop each zero-padded image at (``top[i]``, ``left[i]``) (offsets in [0, 2*padding]) and
    mirror it horizontally where ``flip[i]``; the deterministic core of :func:`augment_crop_flip`.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    dev = x.device
    rows = top.to(dev)[:, None] + torch.arange(h, device=dev)  # (N, H)
    # A flip is just reading the crop's columns right to left, so both fit in one gather.
    ar = torch.arange(w, device=dev)
    cols = left.to(dev)[:, None] + torch.where(flip.to(dev)[:, None], w - 1 - ar, ar)  # (N, W)
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indices around the channel slice put the batch dims first: (N, H, W, C).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def augment_crop_flip(x: torch.Tensor, *, padding: int = 4,
                      generator: torch.Generator | None = None,
                      flip_prob: float = 0.5) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole batch at once.

    Offsets are drawn on ``generator``'s device (x's device when None, from torch's global RNG)
    so a CPU generator gives the same augmentation wherever ``x`` lives.
    """
    n = x.shape[0]
    dev = generator.device if generator is not None else x.device
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < flip_prob
    return crop_flip_at(x, top, left, flip, padding=padding)


def iterate_batches(split: Split, batch_size: int, *, shuffle: bool,
                    generator: torch.Generator | None = None, augment: bool = False,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches indexed straight from the split's tensors, on their device, with
    ``x`` float32 in [0, 1].

    The permutation (and augmentation) come from ``generator`` (torch's global RNG when None),
    so the same seed gives the same batches. Cropping and flipping happen before the float
    conversion, on a quarter of the bytes for uint8 pixels; both orders give identical batches.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(split)
    if shuffle:
        dev = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=dev).to(split.device)
    else:
        order = torch.arange(n, device=split.device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        xb, yb = split.pixels[idx], split.y[idx]
        if augment:
            xb = augment_crop_flip(xb, generator=generator)
        yield as_float(xb), yb
