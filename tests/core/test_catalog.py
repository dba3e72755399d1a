"""The torch-free catalogue (what a config may name) matches the registries that implement it."""

from __future__ import annotations

from ablate.core.attacks import OBJECTIVES as OBJECTIVE_REGISTRY
from ablate.core.catalog import (
    ARCHITECTURES,
    ATTACK_LABELS,
    ATTACKS,
    METHOD_NAMES,
    METHOD_PARAMS,
    OBJECTIVES,
)
from ablate.core.methods import all_methods, method_names
from ablate.core.models import MODELS


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
