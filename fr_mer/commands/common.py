"""Options shared by `fr-mer train`, `fr-mer evaluate`, `fr-mer probe` and `fr-mer demo`, and their parsing.

Every option is checked here, before a cache is opened or a model trained:
ranges by click (usage errors, exit 2), model options against the model's
constructor and the recipe by :class:`~fr_mer.models.Recipe` (one-line
messages naming the option, exit 1, printed by :mod:`fr_mer.cli`).
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Callable

import click
import torch

from fr_mer.commands.name_values import parse_name_values
from fr_mer.data import resolve_device
from fr_mer.errors import ParameterError
from fr_mer.limits import MAX_JOBS, MAX_THREADS
from fr_mer.models import Recipe, list_models, model_class, validate_options
from fr_mer.pipeline.labels import CLASS_COUNTS, CLASS_SPACES, COMPOSITE_SPACE, DATABASE_TITLES
from fr_mer.protocols import PROTOCOLS
from fr_mer.run_plan import check_protocol_choice, loso_database
from fr_mer.workers import set_process_threads


def parse_model_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """``("attention=channel", "proposal_weight=0.5")`` -> dict, values as Python literals when they parse."""
    options: dict[str, object] = {}
    for name, text in parse_name_values(pairs, "--option").items():
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name] = text
    return options


def _classes_help() -> str:
    own = [f"{database} {n} ({', '.join(space.classes)})" for database, spaces in CLASS_SPACES.items()
           for n, space in spaces.items() if space is not COMPOSITE_SPACE]
    return (f"With --protocol loso, the database's class protocol: 3 ({', '.join(COMPOSITE_SPACE.classes)}), "
            f"every database's default; {'; '.join(own)}.")


def model_options(func: Callable) -> Callable:
    decorators = [
        click.option("--model", "model_name", type=click.Choice(list_models()), default="fr", show_default=True,
                     help="Model from the registry (docs/models.md)."),
        click.option("--option", "-o", "option_pairs", multiple=True, metavar="NAME=VALUE",
                     help="Model constructor option, repeatable (e.g. -o attention=channel)."),
        click.option("--epochs", type=int, default=None, help="Training epochs (default: the model's recipe)."),
        click.option("--batch-size", type=int, default=None, help="Batch size (default: the model's recipe)."),
        click.option("--lr", type=float, default=None, help="Learning rate (default: the model's recipe)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
        click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=None,
                     help="torch's CPU threads per process (default: one per core this process may use; "
                          "with evaluate's --jobs, the usable cores divided among the workers)."),
        click.option("--deterministic", is_flag=True,
                     help="torch's deterministic algorithms (and cuBLAS's workspace setting on CUDA): the same "
                          "seed gives the same numbers on the same machine and versions; slower on a GPU."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def protocol_options(func: Callable) -> Callable:
    """``--protocol``, ``--database``, ``--classes``, ``--composite-list``: one declaration for every command that
    chooses a protocol's samples, so they accept and refuse the same values (:func:`resolve_protocol`)."""
    decorators = [
        click.option("--protocol", type=click.Choice(PROTOCOLS), default="composite", show_default=True,
                     help="composite: MEGC2019 68-subject LOSO over the pooled databases; loso: one database; "
                          "lodo: leave one database of the composite out; megc2018-cde: LOSO over CASME II + SAMM, "
                          "objective classes 1-5; megc2018-hde: train on one of them, test on the other."),
        click.option("--database", type=click.Choice(tuple(DATABASE_TITLES)), default=None,
                     help="The database for --protocol loso (default: the cache's one database; a cache of "
                          "several needs it)."),
        click.option("--classes", type=click.Choice([str(n) for n in CLASS_COUNTS]), default=None,
                     help=_classes_help()),
        click.option("--composite-list", type=click.Path(path_type=Path), default=None,
                     help="Composite sample list (official format); default: the official MEGC2019 list."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def jobs_option(help: str) -> Callable[[Callable], Callable]:
    """``--jobs``: worker processes of ``evaluate``, ``probe`` and ``demo`` (one declaration, one bound:
    :data:`fr_mer.limits.MAX_JOBS`); ``help`` says what the command's workers do."""
    return click.option("--jobs", type=click.IntRange(min=1, max=MAX_JOBS), default=None, help=help)


def allow_incomplete_option(func: Callable) -> Callable:
    """``--allow-incomplete``: read a cache whose preprocess run has not finished
    (:func:`fr_mer.pipeline.cache.check_finished`)."""
    return click.option("--allow-incomplete", is_flag=True,
                        help="Use a cache whose preprocess run has not finished (still running, or killed) with "
                             "the samples it holds; without it such a cache is refused.")(func)


@dataclasses.dataclass(frozen=True)
class ProtocolChoice:
    """The values of :func:`protocol_options`, checked; ``database`` resolved for ``--protocol loso``."""

    protocol: str
    database: str | None
    classes: int | None
    composite_list: str | None


def resolve_protocol(cache: Path, protocol: str, database: str | None, classes: str | None,
                     composite_list: Path | None) -> ProtocolChoice:
    """Check the :func:`protocol_options` alike for every command, before any work: each value alone
    (:func:`~fr_mer.run_plan.check_protocol_choice`, exit 1), then ``--protocol loso`` without ``--database``
    takes the cache's one database; a cache of several is a usage error that lists them (exit 2)."""
    count = int(classes) if classes else None
    check_protocol_choice(protocol, database, count)
    try:
        database = loso_database(cache, protocol, database)
    except ParameterError as error:  # the cache holds several databases: --database is missing
        raise click.UsageError(str(error)) from None
    return ProtocolChoice(protocol, database, count, str(composite_list) if composite_list else None)


def resolve_training(model_name: str, option_pairs, epochs, batch_size, lr, device, threads,
                     deterministic: bool = False) -> tuple[dict[str, object], Recipe, torch.device]:
    """Model options, recipe and device from the shared options, validated; determinism set."""
    options = validate_options(model_name, parse_model_options(option_pairs))
    recipe = model_class(model_name).recipe.replace(epochs=epochs, batch_size=batch_size, lr=lr)
    torch_device = resolve_device(device)
    set_process_threads(threads)
    if deterministic:
        from fr_mer.environment import set_deterministic

        set_deterministic()
    return options, recipe, torch_device
