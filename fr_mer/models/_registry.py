"""The model registry: ``register``, ``list_models``, ``model_class``, ``create_model``.

Model modules import this module (never the package ``__init__``, which imports
them), so registering a model creates no import cycle. Constructor arguments
are a model's options, with the paper's values as defaults; options given by a
user (``-o NAME=VALUE``) or read back from a checkpoint are validated against
the constructor's annotated signature before the model is built.
"""
from __future__ import annotations

import collections.abc
import functools
import inspect
import types
import typing
from typing import Any, Callable, Mapping, TypeVar

from pydantic import ConfigDict, ValidationError, create_model as pydantic_model

from fr_mer.config import describe_validation_error
from fr_mer.errors import ParameterError

if typing.TYPE_CHECKING:
    from fr_mer.models.base import MERModel

_REGISTRY: dict[str, type] = {}
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
        raise ParameterError(f"unknown model {name!r}; choose one of {', '.join(list_models())}") from None


def model_option_names(name: str) -> list[str]:
    params = inspect.signature(model_class(name).__init__).parameters
    return [p for p in params if p != "self"]


@functools.cache
def _options_schema(cls: type) -> type:
    """A pydantic model of ``cls.__init__``'s annotated keyword arguments (unknown ones refused)."""
    hints = typing.get_type_hints(cls.__init__)
    fields = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self":
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (hints.get(name, Any), default)
    return pydantic_model(f"{cls.__name__}Options", __config__=ConfigDict(extra="forbid"), **fields)


def _is_sequence(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (tuple, list, collections.abc.Sequence)


def _split_sequence(annotation: object, value: object) -> object:
    """``"u,v"`` for a sequence option is the sequence ``("u", "v")`` (how ``-o channels=u,v`` is written)."""
    if isinstance(value, str) and _is_sequence(annotation):
        return tuple(part.strip() for part in value.split(","))
    return value


def validate_options(name: str, options: Mapping[str, object], *, source: str = "-o") -> dict[str, object]:
    """``options`` checked and converted to the types of model ``name``'s constructor.

    Only the options given are returned (the others keep the constructor's
    defaults). An unknown option or a value of the wrong type is a
    :class:`~fr_mer.errors.ParameterError` naming it and ``source``.
    """
    allowed = model_option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ParameterError(
            f"{source}: model {name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are {', '.join(sorted(allowed)) or 'none'}"
        )
    schema = _options_schema(model_class(name))
    given = {key: _split_sequence(schema.model_fields[key].annotation, value) for key, value in options.items()}
    try:
        validated = schema.model_validate(given)
    except ValidationError as error:
        raise ParameterError(f"{source}: model {name!r} option {describe_validation_error(error)}") from None
    return {key: getattr(validated, key) for key in options}


def create_model(name: str, **options: object) -> MERModel:
    """A freshly initialised model ``name`` built with ``options`` (validated first).

    Initialisation draws from torch's global generator; fr-mer's own callers
    build models inside :func:`fr_mer.randomness.seeded_initialisation`.
    """
    cls = model_class(name)
    options = validate_options(name, options)
    model = cls(**options)
    model._options = dict(options)
    return model
