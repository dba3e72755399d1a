"""Datasets as in-memory tensors: the bundled digits set, CIFAR-10/100 and a synthetic stand-in.

CIFAR is held as its uint8 pixels (a quarter of float32: the 45,000 training images take 138 MB
on the GPU instead of 553 MB), the others as float32 in [0, 1]. :func:`iterate_batches` serves
batches by index straight from (GPU) memory, without DataLoader worker processes, crops and flips
them on that device and only then converts them to float32 in [0, 1]. Normalisation, if any,
belongs to the model.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from ablate.core.catalog import DATASETS, DatasetInfo
from ablate.core.errors import DatasetError, DatasetMissingError, one_line

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetMissingError",
    "Split",
    "as_float",
    "augment_crop_flip",
    "check_cifar",
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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.pixels.shape[1:]
        return int(c), int(h), int(w)


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
    ``train_images``: the size of a CIFAR training set when known (official: 50,000)."""
    if name == "synthetic":  # fixed sizes, val_size unused
        return
    classes = dataset_shape(name)[1]
    if name == "digits":  # a fraction is of the whole set; the hold-out comes from the rest
        pool = DIGITS_IMAGES - _count(DIGITS_TEST, DIGITS_IMAGES)
        count = _count(val_size, DIGITS_IMAGES)
    else:
        pool = train_images or _info(name).train_images or 0
        count = _count(val_size, pool)
    if not classes <= count <= pool - classes:
        raise ValueError(f"{val_size:g} holds out {count} of the {pool} training images of "
                         f"{name}; the stratified hold-out needs {classes} to {pool - classes}")


def load_dataset(name: str, *, root: str = "data", download: bool = False,
                 val_size: int | float = 0.1, seed: int = 0,
                 synthetic_size: tuple[int, int, int] = SYNTHETIC_SIZES) -> Dataset:
    """Load ``name`` (one of ``digits``, ``cifar10``, ``cifar100``, ``synthetic``)."""
    if name == "digits":
        return load_digits(val_size=val_size, seed=seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, root=root, download=download, val_size=val_size, seed=seed)
    if name == "synthetic":
        n_train, n_val, n_test = synthetic_size
        return synthetic_cifar(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def _count(size: int | float, n: int) -> int:
    """An int is a count, a float a fraction of ``n``."""
    if isinstance(size, float):
        return int(round(size * n))
    return int(size)


def _stratified_holdout(y: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices (rest, held-out) with ``size`` held out, stratified by label."""
    idx = np.arange(len(y))
    if size <= 0:
        # sklearn rejects test_size=0; still shuffle so ``subset`` stays a random sample.
        return np.random.default_rng(seed).permutation(idx), idx[:0]
    rest, held = train_test_split(idx, test_size=size, stratify=y, random_state=seed, shuffle=True)
    return rest, held


def _split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(torch.as_tensor(x[idx], dtype=torch.float32).contiguous(),
                 torch.as_tensor(y[idx], dtype=torch.int64))


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
    rest, test_idx = _stratified_holdout(y, _count(test_size, n), seed)
    tr, va = _stratified_holdout(y[rest], _count(val_size, n), seed)
    return Dataset("digits", _split(x, y, rest[tr]), _split(x, y, rest[va]),
                   _split(x, y, test_idx), num_classes=10, augment=DATASETS["digits"].augment)


def _latin1_encode(text: str, encoding: str) -> bytes:
    # How Python 3 pickles bytes under protocol 2; any other codec is not something a CIFAR
    # file needs (and some codecs, zlib_codec, bz2_codec, do real work on attacker input).
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing codec {encoding!r}")
    return codecs.encode(text, "latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only dicts/lists of numpy arrays: the CIFAR batch format needs nothing more, and
    a data directory should never be able to run code. The official files (Python 2, protocol
    2) reference exactly numpy's ``_reconstruct``, ``ndarray`` and ``dtype``."""

    _reconstruct = np.empty(0).__reduce__()[0]
    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1 / the official files
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,  # bytes under pickle protocol 2
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}") from None


def _read_batch(path: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One official-format CIFAR batch: a pickled dict with ``data`` (N, 3072) uint8 in CHW
    order and ``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100) in [0, classes). Anything
    else, including a pickle that references code, is a one-line :class:`DatasetError` naming
    the file."""
    try:
        with open(path, "rb") as f:
            # latin1: the official files were written by Python 2 (keys and array bytes are str).
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"],
                       dtype=np.int64)
    except KeyError as exc:
        raise DatasetError(f"{path}: not a CIFAR batch file (no {exc} entry)") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            OverflowError, MemoryError, OSError) as exc:  # code, truncation, shapes, sizes
        why = one_line(exc)
        raise DatasetError(f"{path}: not a CIFAR batch file, not loaded: {why}") from None
    if y.shape != (len(x),):
        raise DatasetError(f"{path}: {len(x)} images but {y.size} labels")
    if y.size and not 0 <= y.min() <= y.max() < classes:
        raise DatasetError(f"{path}: labels outside [0, {classes})")
    return x, y


def _read_cifar_batches(folder: str, files: list[str],
                        classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read official-format CIFAR batches (see :func:`_read_batch`) into one array pair."""
    batches = [_read_batch(os.path.join(folder, fname), classes) for fname in files]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _cifar_class(name: str) -> tuple[Any, int]:
    from torchvision.datasets import CIFAR10, CIFAR100

    classes = {"cifar10": (CIFAR10, 10), "cifar100": (CIFAR100, 100)}
    if name not in classes:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected cifar10 or cifar100")
    return classes[name]


def _how(cls: Any) -> str:
    return (f"set data.download=true on an online machine, or put the torchvision CIFAR folder "
            f"'{cls.base_folder}' there")


def check_cifar(name: str, root: str) -> int:
    """Raise :class:`DatasetMissingError` (one line, naming the directory) unless every CIFAR
    batch file is under ``root`` in torchvision's layout, and :class:`DatasetError` (naming the
    file) unless each one reads as a CIFAR batch with the restricted unpickler. Reading costs
    about as much as loading: a hostile or damaged file is refused before anything starts.
    Returns the number of training images."""
    _check_present(name, root)
    cls, classes = _cifar_class(name)
    folder = os.path.join(os.path.abspath(os.path.expanduser(root)), cls.base_folder)
    sizes = {f: len(_read_batch(os.path.join(folder, f), classes)[1])
             for f, _md5 in cls.train_list + cls.test_list}
    return sum(sizes[f] for f, _md5 in cls.train_list)


def _missing(cls: Any, root: str) -> list[str]:
    folder = os.path.join(root, cls.base_folder)
    return [f for f, _ in cls.train_list + cls.test_list
            if not os.path.isfile(os.path.join(folder, f))]


def _check_present(name: str, root: str) -> None:
    cls, _ = _cifar_class(name)
    root = os.path.abspath(os.path.expanduser(root))
    missing = _missing(cls, root)
    if missing:
        raise DatasetMissingError(
            f"{name} not found: looked in {root} for {cls.base_folder}/ "
            f"(missing {', '.join(missing)}); {_how(cls)}")


def load_cifar(name: str, *, root: str, download: bool, val_size: int | float,
               seed: int) -> Dataset:
    """CIFAR-10/100 from ``root`` in torchvision's layout (``root/cifar-10-batches-py``, ...).

    Validation is a stratified, seeded hold-out of ``val_size`` from the official training set;
    test is the official test set in its official order (so ``test.subset(n)`` is the usual
    "first n test images" of robustness evaluations).

    torchvision is used only to download (it verifies the archive md5). Loading reads the batch
    pickles directly with a restricted unpickler: torchvision's dataset class unpickles them
    with ``pickle.load`` (which can run code), insists on the md5 of every file (which makes the
    format untestable with small fixtures) and re-hashes ~180 MB on every load.
    """
    cls, num_classes = _cifar_class(name)
    root = os.path.abspath(os.path.expanduser(root))
    if download and _missing(cls, root):
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
        except (RuntimeError, OSError) as err:  # OSError covers URLError when offline
            raise DatasetMissingError(
                f"{name}: download into {root} failed ({err}); {_how(cls)}") from err
    _check_present(name, root)
    folder = os.path.join(root, cls.base_folder)
    train_files = [f for f, _ in cls.train_list]
    test_files = [f for f, _ in cls.test_list]
    x, y = _read_cifar_batches(folder, train_files, num_classes)
    x_test, y_test = _read_cifar_batches(folder, test_files, num_classes)
    tr, va = _stratified_holdout(y, _count(val_size, len(y)), seed)

    def to_split(xa: np.ndarray, ya: np.ndarray, i: np.ndarray) -> Split:
        # uint8 as in the files; batches become float in iterate_batches.
        return Split(torch.from_numpy(xa[i]), torch.from_numpy(ya[i]))

    all_test = np.arange(len(y_test))
    return Dataset(name, to_split(x, y, tr), to_split(x, y, va),
                   to_split(x_test, y_test, all_test), num_classes=num_classes,
                   augment=DATASETS[name].augment)


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
