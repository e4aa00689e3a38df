"""Where fr-mer's random numbers come from: streams derived from (seed, fold), never torch's global state.

A fold's initialisation, batch order, augmentation and dropout are functions of
the run seed and the fold index alone, so a fold gives the same result whichever
process (or order of folds) runs it, and nothing fr-mer does changes torch's
global generators for the caller.

- :func:`fold_seed` (seed, fold index) is the fold's seed: it initialises the
  model (:func:`seeded_initialisation`) and drives the batch order and
  augmentation generator of :func:`fr_mer.training.train_model`.
- :func:`derive_seed` (fold seed, :data:`DROPOUT_STREAM`) seeds the generator
  that dropout draws from (:attr:`fr_mer.models.base.MERModel.generator`), a
  stream independent of the batch order.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

#: Sub-stream tags, so that one seed gives independent streams for different jobs.
DROPOUT_STREAM = 1
STACK_STREAM = 1 << 20  # the batch order of a stack of folds (fr_mer.fold_stack)
SELECT_STREAM = 1 << 21  # nested selection's inner split and inner fits (fr_mer.selection)


def derive_seed(*entropy: int) -> int:
    """A 32-bit seed from integers, through numpy's SeedSequence (independent streams for distinct inputs)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def fold_seed(seed: int, fold_index: int) -> int:
    """A seed per (run seed, fold): independent streams, stable across resumes."""
    return derive_seed(seed, fold_index)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@contextlib.contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Build models inside this block to initialise their weights from ``seed``.

    torch's layer constructors and ``nn.init`` functions take no generator and
    draw from the global CPU generator, so that generator is forked (saved and
    restored around the block) and seeded here: the caller's random state is
    left as it was. Models are built on the CPU and moved afterwards, so the
    initial weights are the same on every device.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
