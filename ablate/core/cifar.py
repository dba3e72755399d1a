"""CIFAR-10/100 from the official python batches in torchvision's layout, read with a restricted
unpickler (a data directory must never run code); torchvision only downloads."""

from __future__ import annotations

import codecs
import os
import pickle
from typing import Any

import numpy as np
import torch

from ablate.core.catalog import DATASETS
from ablate.core.errors import DatasetError, DatasetMissingError, one_line
from ablate.core.splits import Dataset, Split, count, stratified_holdout


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
    tr, va = stratified_holdout(y, count(val_size, len(y)), seed)

    def to_split(xa: np.ndarray, ya: np.ndarray, i: np.ndarray) -> Split:
        # uint8 as in the files; batches become float in iterate_batches.
        return Split(torch.from_numpy(xa[i]), torch.from_numpy(ya[i]))

    all_test = np.arange(len(y_test))
    return Dataset(name, to_split(x, y, tr), to_split(x, y, va),
                   to_split(x_test, y_test, all_test), num_classes=num_classes,
                   augment=DATASETS[name].augment)


