"""The one parser of repeatable ``NAME=VALUE`` options (``-o``, ``--tvl1``, ``--align``); torch-free.

Each command gives the values their types: a model's options as Python literals
(:func:`fr_mer.commands.common.parse_model_options`), a parameter dataclass's
fields like their defaults (``fr-mer preprocess``).
"""
from __future__ import annotations

from collections.abc import Collection

import click


def parse_name_values(items: tuple[str, ...], option: str, names: Collection[str] | None = None) -> dict[str, str]:
    """``("a=1", "b = x")`` -> ``{"a": "1", "b": " x"}``: names stripped, values as written, a later item
    winning; an item without ``=`` or a name, or a name not in ``names`` (when given), is a usage error of
    ``option`` that lists the names."""
    pairs: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or (names is not None and name not in names):
            listed = f" with NAME one of {', '.join(names)}" if names is not None else ""
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE{listed}", param_hint=option)
        pairs[name] = text
    return pairs
