"""Nested selection's grid (``fr-mer evaluate --select FILE``): the select file, its candidates, a fold's choice.

The types every floor above needs: :mod:`fr_mer.run_plan` resolves the grid's
candidates into the plan, :mod:`fr_mer.results_folder` records a fold's
:class:`FoldSelection`, and :mod:`fr_mer.selection` trains and scores the
candidates (its docstring describes the select file and the inner folds).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fr_mer.config import from_record, settings, to_record
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.models import Recipe, create_model, validate_options
from fr_mer.randomness import seeded_initialisation

#: The most candidates a grid may have: each costs inner_folds fits per outer fold.
MAX_CANDIDATES = 64
DEFAULT_INNER_FOLDS = 3
#: Recipe fields a grid may vary: all of them.
RECIPE_KEYS = tuple(field.name for field in dataclasses.fields(Recipe))


class SelectionError(FrMerError, ValueError):
    """A select file or grid that cannot be used; the message names the file (or grid) and the key."""


@settings
class SelectionGrid:
    """A select file's contents: recipe values and model options to choose among, and the inner split."""

    recipe: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    options: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    inner_folds: int = DEFAULT_INNER_FOLDS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.recipe) - set(RECIPE_KEYS))
        if unknown:
            raise ParameterError(f"recipe: no recipe setting(s) {', '.join(unknown)}; the recipe's settings are "
                                 f"{', '.join(RECIPE_KEYS)}")
        for section, grid in (("recipe", self.recipe), ("options", self.options)):
            for key, values in grid.items():
                if not values:
                    raise ParameterError(f"{section}.{key}: an empty list of values; give at least one")
                if any(a == b for a, b in itertools.combinations(values, 2)):
                    raise ParameterError(f"{section}.{key}: a value is repeated ({values}); list each value once")
        if "n_classes" in self.options:
            raise ParameterError("options.n_classes: the number of classes follows the run's label space; "
                                 "it is not chosen")
        if not self.recipe and not self.options:
            raise ParameterError("recipe, options: the grid is empty; give at least one recipe setting or "
                                 "model option with its values")
        if isinstance(self.inner_folds, bool) or self.inner_folds < 2:
            raise ParameterError(f"inner_folds: must be an integer of at least 2, got {self.inner_folds!r}")
        if self.size > MAX_CANDIDATES:
            raise ParameterError(f"recipe, options: {self.size} candidates (the product of the lists' lengths), "
                                 f"more than {MAX_CANDIDATES}; each costs inner_folds fits per outer fold: "
                                 "choose fewer values")

    @property
    def size(self) -> int:
        """The number of candidates (the product of the lists' lengths)."""
        return int(np.prod([len(v) for v in (*self.recipe.values(), *self.options.values())]))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the grid: its ``changes`` to the run's recipe and options, and both resolved."""

    index: int  # position in the grid's cartesian product (file order)
    recipe_changes: Mapping[str, object]
    option_changes: Mapping[str, object]
    recipe: Recipe  # the run's recipe with the changes
    options: Mapping[str, object]  # the run's model options with the changes

    def record(self) -> dict[str, dict[str, object]]:
        """The candidate as the grid gives it (JSON-ready)."""
        return json.loads(json.dumps({"recipe": dict(self.recipe_changes), "options": dict(self.option_changes)}))

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in {**self.recipe_changes, **self.option_changes}.items())


@settings
class FoldSelection:
    """What nested selection chose for one (seed, fold), and on what (recorded in the fold's result)."""

    chosen: int  # the candidate's index in the grid (file order)
    candidate: dict[str, dict[str, Any]]  # {"recipe": {...}, "options": {...}}: the chosen changes
    inner_uf1: list[float]  # every candidate's pooled inner UF1, in grid order
    inner_folds: int
    seconds: float  # the inner fits' share of the fold's time (included in the fold's seconds)


def read_select_file(path: str | Path, model: str, recipe: Recipe, options: Mapping[str, object]) -> SelectionGrid:
    """The select file at ``path``, validated for ``model`` with the run's ``recipe`` and ``options``.

    Every error is a :class:`SelectionError` naming the file and the key: JSON
    that does not parse, an unknown section or recipe setting, an empty or
    repeated list, a value the recipe or the model's constructor refuses, a
    grid of more than :data:`MAX_CANDIDATES` candidates.
    """
    path = Path(path)
    source = f"--select {path}"
    try:
        record = json.loads(path.read_text())
    except OSError as error:
        raise SelectionError(f"{source}: cannot be read ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SelectionError(f"{source}: not a JSON file ({error}); docs/protocols.md#nested-selection "
                             "shows the format") from None
    try:
        grid = from_record(SelectionGrid, record, source=source)
    except FrMerError as error:
        raise SelectionError(str(error)) from None
    resolve_candidates(grid, model, recipe, options, source=source)
    return grid


def _recipe_with(base: Recipe, changes: Mapping[str, object], source: str) -> Recipe:
    """``base`` with ``changes``, validated, with :meth:`Recipe.replace`'s rule: given epochs run as given."""
    record = {**to_record(base), **changes}
    if "epochs" in changes and "min_steps" not in changes:
        record["min_steps"] = 0
    try:
        return from_record(Recipe, record, source=source)
    except FrMerError as error:
        raise SelectionError(str(error)) from None


def _model_inputs(model: str, options: Mapping[str, object]) -> dict[str, object]:
    with seeded_initialisation(0):
        return dict(create_model(model, **options).inputs)


def resolve_candidates(grid: SelectionGrid, model: str, recipe: Recipe, options: Mapping[str, object], *,
                       inputs: Mapping[str, object] | None = None,
                       source: str = "--select") -> tuple[Candidate, ...]:
    """The grid's candidates, in file order, each validated (``source`` names the file in messages).

    Every value is checked on its own first (the message names ``recipe.KEY[i]`` or
    ``options.KEY[i]``), then every combination of options builds a model once (the
    constructor's own checks), whose cache inputs must be the run's ``inputs``: the
    data is loaded once for all candidates.
    """
    for key, values in grid.recipe.items():
        for i, value in enumerate(values):
            _recipe_with(recipe, {key: value}, f"{source}: recipe.{key}[{i}]")
    checked: dict[str, list[object]] = {}
    for key, values in grid.options.items():
        try:
            checked[key] = [validate_options(model, {key: value}, source=f"{source}: options.{key}[{i}]")[key]
                            for i, value in enumerate(values)]
        except FrMerError as error:
            raise SelectionError(str(error)) from None
    if inputs is None:
        inputs = _model_inputs(model, options)
    option_sets = []
    for combination in itertools.product(*checked.values()):
        changes = dict(zip(checked, combination))
        merged = {**options, **changes}
        described = ", ".join(f"{k}={v}" for k, v in changes.items())
        try:
            own = _model_inputs(model, merged)
        except FrMerError as error:
            raise SelectionError(f"{source}: options {described}: {error}") from None
        if own != dict(inputs):
            raise SelectionError(f"{source}: options {described}: the model then reads other cache inputs "
                                 f"({own}) than the run's ({dict(inputs)}); the data is loaded once for every "
                                 "candidate: give that option with -o instead")
        option_sets.append((changes, merged))
    candidates = []
    for combination in itertools.product(*grid.recipe.values()):
        recipe_changes = dict(zip(grid.recipe, combination))
        described = ", ".join(f"{k}={v}" for k, v in recipe_changes.items())
        resolved = _recipe_with(recipe, recipe_changes, f"{source}: recipe {described}")
        for changes, merged in option_sets:
            candidates.append(Candidate(len(candidates), recipe_changes, changes, resolved, merged))
    return tuple(candidates)
