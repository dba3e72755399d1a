"""Shared fixtures: a small slice of the real digits data and tiny models (CPU, seeded)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ablate.core.data import Dataset, load_digits
from ablate.core.models import build_model

torch.set_num_threads(1)  # deterministic and no oversubscription on the 2-core CI machine


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits(seed=0)


@pytest.fixture
def small_digits(digits: Dataset) -> Dataset:
    """192 training and 96 validation/test images: a few batches, fast."""
    return Dataset("digits", digits.train.subset(192), digits.val.subset(96),
                   digits.test.subset(96), digits.num_classes, augment=False)


@pytest.fixture
def make_net() -> Callable[..., nn.Module]:
    def make(seed: int = 0, width: int = 4) -> nn.Module:
        torch.manual_seed(seed)
        return build_model("small_cnn", num_classes=10, in_channels=1, width=width)

    return make


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory (MLflow store, runs/) with its own teacher cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="module")
def module_teachers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher cache per test module: its tests train the same teachers once."""
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture
def here(workdir: Path, module_teachers: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``workdir`` whose teacher cache the module's tests share, with no tracking URI from the
    environment."""
    monkeypatch.setenv("ABLATE_CACHE", str(module_teachers))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return workdir


@pytest.fixture(scope="module", autouse=True)
def shutdown_ray() -> Iterator[None]:
    """A module that started Ray (a search or grid in-process) leaves none to the next: tests
    check that refused commands never start it."""
    yield
    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()
