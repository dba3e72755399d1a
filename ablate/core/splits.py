"""Datasets as in-memory tensors: a :class:`Split` (images and labels) and a :class:`Dataset`
(train, validation and test splits), and the stratified, seeded hold-out every loader uses.

Images are stored as uint8 pixels where the files hold them (CIFAR, Fashion-MNIST: a quarter
of float32's memory, on the GPU too) or as float32 in [0, 1]; ``Split.x`` always gives float32
in [0, 1]. Normalisation, if any, belongs to the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split


def as_float(pixels: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 pixels divided by 255, float images unchanged."""
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255.0)
    return pixels


@dataclass
class Split:
    """Images and labels ``y`` (int64, (N,)). ``pixels`` (N, C, H, W) is how the images are
    stored: uint8 in 0..255 or float32 in [0, 1]; ``x`` gives them as float32 in [0, 1]."""

    pixels: torch.Tensor
    y: torch.Tensor

    @property
    def x(self) -> torch.Tensor:
        """All images as float32 in [0, 1] (a new tensor when stored as uint8)."""
        return as_float(self.pixels)

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.pixels.to(device), self.y.to(device))

    def subset(self, n: int | None) -> Split:
        """The first ``n`` samples; splits are already shuffled, so this is a random subset."""
        if n is None or n >= len(self):
            return self
        return Split(self.pixels[:n], self.y[:n])


@dataclass
class Dataset:
    """Train/val/test splits plus what training needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool  # random crop (pad 4) + horizontal flip on training batches

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(self.name, self.train.to(device), self.val.to(device),
                       self.test.to(device), self.num_classes, self.augment)

    def with_train(self, train: Split) -> Dataset:
        """The same dataset training on ``train`` (e.g. a subset of its training split)."""
        return Dataset(self.name, train, self.val, self.test, self.num_classes, self.augment)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.pixels.shape[1:]
        return int(c), int(h), int(w)


def count(size: int | float, n: int) -> int:
    """An int is a count, a float a fraction of ``n``."""
    if isinstance(size, float):
        return int(round(size * n))
    return int(size)


def stratified_holdout(y: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices (rest, held-out) with ``size`` held out, stratified by label."""
    idx = np.arange(len(y))
    if size <= 0:
        # sklearn rejects test_size=0; still shuffle so ``subset`` stays a random sample.
        return np.random.default_rng(seed).permutation(idx), idx[:0]
    rest, held = train_test_split(idx, test_size=size, stratify=y, random_state=seed, shuffle=True)
    return rest, held


def float_split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(torch.as_tensor(x[idx], dtype=torch.float32).contiguous(),
                 torch.as_tensor(y[idx], dtype=torch.int64))


