"""Checkpoint integrity: every file ablate saves gets a sha256 digest beside it, and every
checkpoint is verified before it is used.

``torch.load`` does not check the CRCs of the zip it reads, so a checkpoint whose bytes were
garbled (a bad disk, a partial copy, an edited tensor) loads silently and trains or tests with
garbage. The rules:

* a saved file is written to a temporary name and renamed into place, then its digest
  ``FILE.sha256`` (``sha256sum`` format) is written the same way; the old digest is removed
  first, so a crash in between leaves a file without a digest, never one with a wrong one;
* a file with a digest must match it; a file without one (older runs, a user's own teacher)
  gets the zip CRC check of every entry;
* a loaded state must hold finite floating tensors only (weights, optimizer buffers).

Every failure is a one-line :class:`~ablate.core.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ablate.core.errors import CheckpointError

DIGEST_SUFFIX = ".sha256"
_CHUNK = 1 << 20


def digest_path(path: str | os.PathLike) -> Path:
    """Where the digest of ``path`` is kept: ``FILE.sha256`` beside it."""
    return Path(f"{os.fspath(path)}{DIGEST_SUFFIX}")


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _replace_with(path: Path, write: Any) -> None:
    """``write(tmp)`` then rename over ``path``: readers see the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_verified(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically, then its digest beside it (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest_path(path).unlink(missing_ok=True)  # never a stale digest beside a new file
    _replace_with(path, lambda tmp: torch.save(obj, tmp))
    write_digest(path)
    return path


def write_digest(path: str | os.PathLike) -> Path:
    """Write ``FILE.sha256`` for an existing file (atomically)."""
    path = Path(path)
    line = f"{sha256(path)}  {path.name}\n"
    target = digest_path(path)
    _replace_with(target, lambda tmp: tmp.write_text(line, encoding="ascii"))
    return target


def verify_file(path: str | os.PathLike) -> None:
    """Refuse a damaged file: against its digest when it has one, else by the zip CRCs."""
    path = Path(path)
    digest = digest_path(path)
    if digest.is_file():
        expected = digest.read_text(encoding="ascii", errors="replace").split()[:1]
        if expected != [sha256(path)]:
            raise CheckpointError(
                f"checkpoint {path} is damaged: its sha256 does not match {digest.name}, "
                "written when it was saved (restore it from a copy, or delete the run)")
        return
    check_zip(path)


def check_zip(path: str | os.PathLike) -> None:
    """The CRC check ``torch.load`` skips, on every entry of a (zip) torch checkpoint. A file
    in torch's legacy pre-1.6 format is not a zip and has no CRCs to check."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is damaged: {type(exc).__name__}: "
                              f"{exc}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: entry {bad} fails its CRC check")


def check_finite(obj: Any, path: str | os.PathLike, what: str = "") -> None:
    """Refuse a state holding NaN or infinite floating-point values (weights, optimizer
    buffers): resuming or testing from it would only report garbage as a result."""
    for key, tensor in _tensors(obj, what):
        if tensor.is_floating_point() or tensor.is_complex():
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"checkpoint {os.fspath(path)} holds non-finite values "
                                      f"(NaN or inf) in {key or 'its tensor'}")


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")
