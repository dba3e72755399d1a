"""The registry of distillation methods: CIARD and the methods it is compared with (the
docs/methods.md).

Entries are :class:`Method` values defined by one module per family (``ciard``,
``adversarial_training``, ``distillation``); this module registers them, in the order
``ablate methods`` lists them, and is the only way to look them up. The families import
``methods.base`` only, never this module, so the package has no import cycle.
"""

from __future__ import annotations

from ablate.core.methods.adversarial_training import PGD_AT, TRADES
from ablate.core.methods.base import EpochParams, LossFn, Method, Out
from ablate.core.methods.ciard import CIARD
from ablate.core.methods.distillation import ADAAD, ARD, MTARD, RSLAD

__all__ = ["EpochParams", "LossFn", "Method", "Out", "all_methods", "get_method",
           "method_names", "register_method"]

_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add ``method`` to the registry; a name can be registered once."""
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} is already registered")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The method registered as ``name``; KeyError naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}") from None


def method_names() -> tuple[str, ...]:
    """Registered names, in registration order."""
    return tuple(_REGISTRY)


def all_methods() -> tuple[Method, ...]:
    """Registered methods, in registration order."""
    return tuple(_REGISTRY.values())


# CIARD first, then the order of docs/methods.md's table: this is the order of
# ``ablate methods`` and of the config's method union.
for _method in (CIARD, PGD_AT, TRADES, ARD, RSLAD, MTARD, ADAAD):
    register_method(_method)
del _method
