"""Options shared by `fr-mer train` and `fr-mer evaluate`, and their parsing."""
from __future__ import annotations

import ast
import functools
from typing import Callable

import click
import torch

from fr_mer.data import resolve_device
from fr_mer.models import list_models, model_class


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
        click.option("--threads", type=int, default=None,
                     help="CPU threads for torch (default: torch's choice, all cores)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def resolve_training(model_name: str, option_pairs, epochs, batch_size, lr, device, threads):
    """Model options, recipe and device from the shared options, validated."""
    if threads:
        torch.set_num_threads(threads)
    options = parse_model_options(option_pairs)
    recipe = model_class(model_name).recipe.replace(epochs=epochs, batch_size=batch_size, lr=lr)
    try:
        return options, recipe, resolve_device(device)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


def user_errors(func: Callable) -> Callable:
    """Turn the library's input errors into one-line click errors (no traceback)."""
    from fr_mer.checkpoint import CheckpointError
    from fr_mer.evaluation import EvaluationError
    from fr_mer.pipeline.cache import CacheError
    from fr_mer.pipeline.composite import CompositeListError

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (CacheError, CheckpointError, EvaluationError, CompositeListError, FileNotFoundError,
                ValueError) as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
