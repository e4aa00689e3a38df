"""One mechanism for the settings fr-mer records and reads back.

Preprocessing parameters, evaluation configs, training recipes, synthetic-data
settings and model options are frozen dataclasses declared with :func:`settings`.
:func:`to_record` turns one into JSON-ready data (tuples become lists) and
:func:`from_record` validates such data on the way back in with pydantic: types are
checked, an unknown key is refused (it was written by a newer fr-mer, or mistyped),
a key missing from an older record takes the field's default, and each class's own
``__post_init__`` checks run. A failure is a :class:`~fr_mer.errors.ParameterError`
that names where the record came from.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from fr_mer.errors import ParameterError

T = TypeVar("T")


def settings(cls: type[T]) -> type[T]:
    """Class decorator: a frozen dataclass whose records refuse unknown keys."""
    cls.__pydantic_config__ = ConfigDict(extra="forbid")
    return dataclasses.dataclass(frozen=True)(cls)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def to_record(value: Any) -> dict[str, Any]:
    """A settings object as JSON-ready data (nested settings as dicts, tuples as lists)."""
    return _adapter(type(value)).dump_python(value, mode="json")


def from_record(cls: type[T], record: Mapping[str, Any], *, source: str = "the record") -> T:
    """``cls`` rebuilt from :func:`to_record`'s output, validated.

    ``source`` names where the record came from (a file, a cache attribute, an
    option) for the error message.
    """
    if not isinstance(record, Mapping):
        raise ParameterError(f"{source}: expected a mapping of {cls.__name__} settings, found {type(record).__name__}")
    try:
        return _adapter(cls).validate_python(dict(record))
    except ValidationError as error:
        raise ParameterError(f"{source}: {describe_validation_error(error)}") from None


def describe_validation_error(error: ValidationError) -> str:
    """pydantic's errors in one line: ``field.sub: message; ...``."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "value"
        message = item["msg"]
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            message = "unknown setting (written by a newer fr-mer, or misspelt)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def with_added(recorded: Mapping[str, object], added: Mapping[str, object]) -> dict[str, object]:
    """``recorded`` with each of ``added``'s keys it lacks, at any depth (nested mappings merged)."""
    out = dict(recorded)
    for key, value in added.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(out[key], Mapping):
            out[key] = with_added(out[key], value)
    return out
