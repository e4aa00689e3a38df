"""Where a command writes, checked once before any work: never over or inside one of its inputs.

Every command that writes calls :func:`check_output` for each of its outputs with
all of its inputs (cache, sheet, release root, run folder, checkpoint, ...) before
it reads or computes anything. An output that is an input (the same file, by any
path or link), or lies inside an input folder, is refused naming both (exit 1), so
a careless ``--out`` never replaces a cache, a spreadsheet, a release or a run.
Then the output must be writable where it is: a file where a file is wanted (and a
folder where a folder is), under a folder this user can write to (click usage
errors, exit 2, naming the option).

What ``--overwrite`` may replace is checked by each writer, which alone knows what
it made: a cache with its schema (:mod:`fr_mer.pipeline.cache`), a results folder
with its ``config.json`` (:mod:`fr_mer.results_folder`), a synth folder with its
manifest (:mod:`fr_mer.pipeline.synth.writing`), a checkpoint of fr-mer's format
(``fr-mer train``). This module imports neither torch nor h5py: ``scan``,
``preprocess`` and ``synth`` use it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Union

import click

from fr_mer.errors import FrMerError

#: An input option's value: one path, several (a repeatable option), or None when not given.
InputValue = Union[str, Path, Iterable[Union[str, Path]], None]


class OutputPathError(FrMerError):
    """An output that is, or lies inside, one of the command's inputs."""


def _paths(value: InputValue) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value if v is not None]


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file or folder: the same resolved path, or (hard links) the same inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(output: Path, option: str, inputs: Mapping[str, InputValue]) -> None:
    """Refuse ``output`` when it is one of ``inputs`` (option -> path(s)) or lies inside an input folder."""
    target = Path(output).resolve()
    for input_option, value in inputs.items():
        for source in _paths(value):
            if _same_file(Path(output), source):
                relation = "is"
            elif source.is_dir() and target.is_relative_to(source.resolve()):
                relation = "lies inside"
            else:
                continue
            raise OutputPathError(
                f"{option} {output} {relation} the input {input_option} {source}: fr-mer never writes over or "
                f"into its inputs; choose another {option}"
            )


def check_writable_target(path: Path, option: str, *, folder: bool) -> None:
    """Refuse ``path`` before any work when it cannot be written: a file where a folder is
    wanted (or the reverse), or a parent that is not a writable folder (click usage errors)."""
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if folder else "a file"
        raise click.BadParameter(f"{path} exists and is not {kind}", param_hint=option)
    target = path if folder and path.is_dir() else path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir() or not os.access(target, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{path}: {target} is not a folder this user can write to", param_hint=option)


def check_output(path: Path | None, option: str, inputs: Mapping[str, InputValue], *, folder: bool) -> None:
    """Both checks for one output (nothing when ``path`` is None): not an input, then writable."""
    if path is None:
        return
    check_not_an_input(path, option, inputs)
    check_writable_target(Path(path), option, folder=folder)


def check_results_folder(path: Path, option: str, *, markers: tuple[str, ...] = ("config.json", "folds")) -> None:
    """Refuse a results folder that exists, holds files and is not one of fr-mer's (none of ``markers``: its
    recorded settings, its finished folds): its files (a user's notes, another program's predictions.csv)
    would be replaced by the reports."""
    path = Path(path)
    if path.is_dir() and not any((path / marker).exists() for marker in markers) and any(path.iterdir()):
        raise OutputPathError(
            f"{option} {path}: a folder that holds files fr-mer did not write (no {' or '.join(markers)}); results "
            f"go only into a new or empty folder or an fr-mer results folder: choose another {option}"
        )
