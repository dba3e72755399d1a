"""The torch-free catalogue (what a config may name) matches the registries that implement it."""

from __future__ import annotations

import pytest

from ablate.core.attacks import OBJECTIVES as OBJECTIVE_REGISTRY
from ablate.core.catalog import (
    ARCHITECTURES,
    ATTACK_LABELS,
    ATTACKS,
    DATASETS,
    METHOD_NAMES,
    METHOD_PARAMS,
    OBJECTIVES,
    ZOO_DATASETS,
)
from ablate.core.data import check_split, dataset_shape, load_dataset
from ablate.core.methods import all_methods, method_names
from ablate.core.models import MODELS
from ablate.core.zoo import _zoo
from tests.helpers import write_fake_cifar10


def test_names_are_the_registries_names() -> None:
    assert sorted(ARCHITECTURES) == sorted(MODELS)
    assert sorted(OBJECTIVES) == sorted(OBJECTIVE_REGISTRY)
    assert set(ATTACK_LABELS) == set(ATTACKS)


def test_method_params_follow_the_registry() -> None:
    """The config's method union is in the registry's order, one params model per method, and
    each method's facts (objective, teachers, ITT) are known names."""
    assert METHOD_NAMES == method_names()
    assert METHOD_PARAMS == tuple(m.params for m in all_methods())
    for m in all_methods():
        assert m.objective in OBJECTIVES and set(m.teachers) <= {"clean", "robust"}
        assert m.summary and m.name == m.params().name
    assert [m.name for m in all_methods() if m.itt] == ["ciard"]


def test_each_dataset_loads_as_its_registry_entry_says(tmp_path) -> None:
    """Shape, classes, augmentation and the training pool of every registered dataset are what
    its loader produces (CIFAR-100 shares CIFAR-10's loader and is checked by its shape)."""
    write_fake_cifar10(str(tmp_path))
    for name in ("digits", "synthetic", "cifar10"):
        info, data = DATASETS[name], load_dataset(name, root=str(tmp_path), val_size=20)
        assert data.image_shape == (info.channels, info.side, info.side), name
        assert (data.num_classes, data.augment) == (info.classes, info.augment), name
        assert dataset_shape(name) == (info.channels, info.classes)
    assert DATASETS["cifar100"].classes == 100 and DATASETS["cifar100"].train_images == 50_000
    check_split("cifar10", 49_990)  # the official pool: 50,000 minus one image per class
    with pytest.raises(ValueError, match="of the 50000 training images"):
        check_split("cifar10", 49_991)


def test_zoo_datasets_are_robustbench_datasets() -> None:
    """A dataset's zoo entry names one of RobustBench's datasets, of the same shape."""
    model_dicts = _zoo()[0]  # keyed by RobustBench's BenchmarkDataset
    assert set(ZOO_DATASETS) <= {d.value for d in model_dicts}
    for info in DATASETS.values():
        if info.zoo is not None:
            zoo = DATASETS[info.zoo]
            assert (info.channels, info.side, info.classes) == (zoo.channels, zoo.side,
                                                                zoo.classes), info.name
