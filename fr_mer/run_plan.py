"""What an evaluation run is, resolved once before anything is loaded.

:class:`EvalConfig` is what a user asks for (the ``evaluate`` options, or a
library caller's); :func:`make_plan` resolves it into a :class:`RunPlan`: the
model class and its validated options, the label space (and so the
model's number of classes), the recipe, the cache columns the model
reads, the seeds that run, the fold rule and how folds are grouped into
stacks. Every later stage (data -> folds -> training -> reports) takes the plan
and asks nothing of the registry or the config again. The plan's ``config`` is
the record a results folder keeps (``config.json``), against which a resumed
run is checked.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from fr_mer.config import settings
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.models import MERModel, Recipe, create_model, model_class, validate_options
from fr_mer.pipeline.labels import (
    CLASS_COUNTS,
    COMPOSITE_SPACE,
    DATABASE_TITLES,
    LabelSpace,
    resolve_label_space,
)
from fr_mer.protocols import PROTOCOLS, Fold
from fr_mer.randomness import fold_seed, seeded_initialisation
from fr_mer.selection_grid import Candidate, SelectionGrid, resolve_candidates


class EvaluationError(FrMerError, ValueError):
    """A run that cannot start or resume (missing weights, a results folder of another run, ...)."""


#: The training seeds of a run by default (``fr-mer evaluate --seeds``, ``fr-mer demo --seeds``): three, so that
#: a run reports a spread over seeds.
DEFAULT_SEEDS = (0, 1, 2)


def check_protocol_choice(protocol: str, database: str | None, classes: int | None) -> None:
    """The checks of ``--protocol``, ``--database`` and ``--classes``, the same for every command that takes
    them (``evaluate``, ``train``, ``probe``): each alone, then together
    (:func:`~fr_mer.pipeline.labels.resolve_label_space`) unless ``--protocol loso`` waits for the cache's
    database."""
    if protocol not in PROTOCOLS:
        raise ParameterError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if database is not None and database not in DATABASE_TITLES:
        raise ParameterError(f"--database must be one of {', '.join(DATABASE_TITLES)}, got {database!r}")
    if database is not None and protocol != "loso":
        raise ParameterError(f"--database is for --protocol loso; --protocol {protocol} chooses its own databases")
    if classes is not None and classes not in CLASS_COUNTS:
        raise ParameterError(f"--classes must be one of {', '.join(map(str, CLASS_COUNTS))}, got {classes}")
    if protocol != "loso" or database is not None:
        resolve_label_space(protocol, database, classes)


def loso_database(cache: str | Path, protocol: str, database: str | None) -> str | None:
    """``database``, or for ``--protocol loso`` without one the cache's one database: a cache of several is
    refused with a :class:`~fr_mer.errors.ParameterError` that lists them."""
    if protocol != "loso" or database is not None:
        return database
    from fr_mer.data import single_database
    from fr_mer.pipeline.cache import read_cache

    return single_database(read_cache(cache))


@settings
class EvalConfig:
    """What defines an evaluation run; a resumed run must match it exactly."""

    model: str
    protocol: str = "composite"
    database: str | None = None  # loso: None takes the cache's one database
    classes: int | None = None  # loso: the database's class protocol (CLASS_SPACES); None: the protocol's own
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    recipe: Recipe | None = None  # None: the model's own recipe
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    weights_dir: str | None = None
    composite_list: str | None = None
    val_fraction: float = 0.0
    fold_batch: int = 1  # folds of a seed trained together as one stacked model; 0: all of them
    select: SelectionGrid | None = None  # nested selection's grid (--select FILE, fr_mer.selection)

    def __post_init__(self) -> None:
        check_protocol_choice(self.protocol, self.database, self.classes)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ParameterError(f"seeds must be distinct integers >= 0 (--first-seed, --seeds), "
                                 f"got {list(self.seeds)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ParameterError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.fold_batch < 0:
            raise ParameterError(f"--fold-batch must be 0 (all folds of a seed) or more, got {self.fold_batch}")
        if self.select is not None and self.weights_dir is not None:
            raise ParameterError("--select chooses among trained candidates; --weights trains nothing: give one")


@dataclasses.dataclass(frozen=True)
class FoldJob:
    """One (seed, fold) of the run: the unit that is trained, saved and resumed."""

    seed: int
    index: int  # the fold's position in the protocol's fold order
    fold: Fold

    @property
    def fold_seed(self) -> int:
        return fold_seed(self.seed, self.index)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """An evaluation run, resolved: see the module docstring."""

    config: EvalConfig  # as recorded: options validated, recipe resolved, composite list absolute
    cache: Path  # absolute
    model_class: type[MERModel]
    options: Mapping[str, object]
    recipe: Recipe
    inputs: Mapping[str, tuple[str, ...] | None]  # cache column -> flow channels (or None)
    seeds: tuple[int, ...]  # the seeds that run (the first alone with released weights)
    weights_dir: Path | None
    composite_list: Path | None
    stack: int | None  # folds trained together: 1 fold by fold, None all folds of a seed
    label_space: LabelSpace = COMPOSITE_SPACE
    candidates: tuple[Candidate, ...] = ()  # nested selection's (fr_mer.selection); () selects nothing
    #: ``--audit-selection``: log the held-out subject's predictions after every epoch
    #: (:mod:`fr_mer.selection_audit`); not a setting of the run (the results are the same)
    audit_selection: bool = False

    @property
    def model_name(self) -> str:
        return self.model_class.model_name

    def build_model(self, seed: int) -> MERModel:
        """A fresh model initialised from ``seed`` (torch's global generators untouched)."""
        with seeded_initialisation(seed):
            return create_model(self.model_name, **self.options)

    def jobs(self, folds: Sequence[Fold]) -> list[FoldJob]:
        """Every (seed, fold) in run order: seed by seed, folds in protocol order."""
        return [FoldJob(seed, index, fold) for seed in self.seeds for index, fold in enumerate(folds)]


def with_class_count(name: str, options: Mapping[str, object], label_space: LabelSpace) -> dict[str, object]:
    """``options`` with the model's ``n_classes`` set to the label space's, when its default differs."""
    given = options.get("n_classes")
    if given is not None and given != label_space.n_classes:
        raise ParameterError(f"-o n_classes={given}: the run predicts the {label_space.n_classes} classes "
                             f"of {label_space.name} ({', '.join(label_space.classes)})")
    default = inspect.signature(model_class(name).__init__).parameters["n_classes"].default
    if default == label_space.n_classes:
        return dict(options)
    return {**options, "n_classes": label_space.n_classes}


def default_fold_batch(model: str, recipe: Recipe | None, device: torch.device, recorded: int | None = None, *,
                       stacking: bool = True) -> int:
    """``--fold-batch`` when it is not given: the value a resumed run ``recorded``
    (:func:`fr_mer.results_folder.recorded_fold_batch`); else 0 (all folds of a seed stacked) on CUDA where the
    model stacks with ``recipe``, and 1 on the CPU or without ``stacking`` (``--audit-selection``, which trains
    fold by fold).

    Stacking is the same training per fold (:mod:`fr_mer.func_stack`), so the
    choice is speed alone: on a GPU one fold is too little work, on the CPU the
    cores are busy either way and stacking only adds copies (docs/benchmarks-stack.md).
    """
    if recorded is not None:
        return recorded
    if device.type != "cuda" or not stacking:
        return 1
    from fr_mer.fold_stack import check_stackable

    cls = model_class(model)
    try:
        check_stackable(cls, recipe or cls.recipe)
    except ParameterError:
        return 1
    return 0


def make_plan(config: EvalConfig, cache: str | Path) -> RunPlan:
    """Resolve ``config`` for the cache at ``cache``; raises before anything is loaded or written."""
    cls = model_class(config.model)
    options = validate_options(config.model, config.options)
    recipe = config.recipe or cls.recipe
    weights_dir = Path(config.weights_dir) if config.weights_dir else None
    if weights_dir is not None and not weights_dir.is_dir():
        raise EvaluationError(f"--weights {weights_dir}: no such folder")
    database = loso_database(cache, config.protocol, config.database)
    label_space = resolve_label_space(config.protocol, database, config.classes)
    options = with_class_count(config.model, options, label_space)
    composite_list = Path(config.composite_list).resolve() if config.composite_list else None
    # An instance's inputs can depend on its options (e.g. which flow channels); building one
    # also runs the constructor's own checks of the option values.
    with seeded_initialisation(0):
        inputs = dict(create_model(config.model, **options).inputs)
    candidates = () if config.select is None else resolve_candidates(config.select, config.model, recipe, options,
                                                                     inputs=inputs)
    if config.fold_batch != 1 and weights_dir is None:
        from fr_mer.fold_stack import check_stackable

        for each in (recipe, *(c.recipe for c in candidates)):
            check_stackable(cls, each)
    recorded = dataclasses.replace(config, database=database, options=options, recipe=recipe,
                                   composite_list=str(composite_list) if composite_list else None)
    return RunPlan(
        config=recorded, cache=Path(cache).resolve(), model_class=cls, options=options, recipe=recipe,
        inputs=inputs, seeds=config.seeds[:1] if weights_dir else tuple(config.seeds), weights_dir=weights_dir,
        composite_list=composite_list,
        stack=1 if weights_dir else (config.fold_batch or None), label_space=label_space, candidates=candidates,
    )
