"""Options shared by `fr-mer train` and `fr-mer evaluate`, and their parsing.

Every option is checked here, before a cache is opened or a model trained:
ranges by click (usage errors, exit 2), model options against the model's
constructor and the recipe by :class:`~fr_mer.models.Recipe` (one-line
messages naming the option, exit 1, printed by :mod:`fr_mer.cli`).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Callable

import click
import torch

from fr_mer.data import resolve_device
from fr_mer.models import Recipe, list_models, model_class, validate_options
from fr_mer.workers import set_process_threads


def parse_model_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """``("attention=channel", "proposal_weight=0.5")`` -> dict, values as Python literals when they parse."""
    options: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--option")
        try:
            options[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name.strip()] = text
    return options


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
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="torch's CPU threads per process (default: one per core this process may use; "
                          "with evaluate's --jobs, the usable cores divided among the workers)."),
        click.option("--deterministic", is_flag=True,
                     help="torch's deterministic algorithms (and cuBLAS's workspace setting on CUDA): the same "
                          "seed gives the same numbers on the same machine and versions; slower on a GPU."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


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


def check_writable_target(path: Path, option: str, *, folder: bool) -> None:
    """Refuse ``--out`` before any work when it cannot be written: a file where a folder is
    wanted (or the reverse), or a parent that is not a writable folder."""
    import os

    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if folder else "a file"
        raise click.BadParameter(f"{path} exists and is not {kind}", param_hint=option)
    target = path if folder and path.is_dir() else path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{path}: {target} is not a folder this user can write to", param_hint=option)
