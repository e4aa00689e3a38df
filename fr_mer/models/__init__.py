"""Model registry: ``create_model("fr", **options)``.

One model per module; each registers itself with :func:`register`. Constructor
arguments are the model's options, with the paper's values as defaults.
"""
from __future__ import annotations

import inspect
from typing import Callable, TypeVar

from fr_mer.models.base import MERModel, Recipe, count_parameters

_REGISTRY: dict[str, type[MERModel]] = {}
M = TypeVar("M", bound=type)


def register(name: str) -> Callable[[M], M]:
    def decorate(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        cls.model_name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str) -> type[MERModel]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}") from None


def model_option_names(name: str) -> list[str]:
    params = inspect.signature(model_class(name).__init__).parameters
    return [p for p in params if p != "self"]


def create_model(name: str, **options: object) -> MERModel:
    cls = model_class(name)
    allowed = set(model_option_names(name))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are {', '.join(sorted(allowed)) or 'none'}"
        )
    model = cls(**options)
    model._options = dict(options)
    return model


# Importing the modules registers the models.
from fr_mer.models import ststnet  # noqa: E402,F401
from fr_mer.models import micro_attention  # noqa: E402,F401
from fr_mer.models import meranet  # noqa: E402,F401
from fr_mer.models import smastn  # noqa: E402,F401
from fr_mer.models import dual_inception, fr, off_apexnet  # noqa: E402,F401

__all__ = [
    "MERModel", "Recipe", "count_parameters", "create_model", "list_models",
    "model_class", "model_option_names", "register",
]
