"""The ``ablate`` command line (:func:`main`)."""

from __future__ import annotations

from ablate.cli.main import main

__all__ = [
    "main",
]
