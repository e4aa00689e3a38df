"""Leave-one-subject-out evaluation: folds x seeds, pooled metrics, resumable.

For each seed and each fold, a fresh model (weights re-initialised) is trained
on the other subjects and predicts the held-out one once; nothing else looks at
the held-out subject. Each finished fold is written to
``OUT/folds/seed<S>/<database>-<subject>.json`` atomically, so an interrupted
run resumes at the first unfinished fold. Metrics are computed on the pooled
predictions of all folds (per seed), then summarised as mean and standard
deviation over seeds (:mod:`fr_mer.report`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from fr_mer.errors import FrMerError
from fr_mer.checkpoint import load_state_dict_file
from fr_mer.data import DeviceDataset, load_dataset
from fr_mer.metrics import uar, uf1
from fr_mer.models import Recipe, create_model, model_class
from fr_mer.protocols import Fold, subject_folds, validation_split
from fr_mer.training import predict_proba, seed_everything, train_model

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What defines an evaluation run; a resumed run must match it exactly."""

    model: str
    protocol: str = "composite"
    database: str | None = None
    options: Mapping[str, object] = dataclasses.field(default_factory=dict)
    recipe: Recipe | None = None  # None: the model's own recipe
    seeds: tuple[int, ...] = (0, 1, 2)
    weights_dir: str | None = None
    composite_list: str | None = None
    val_fraction: float = 0.0
    fold_batch: int = 1  # folds of a seed trained together as one stacked model; 0: all of them

    def resolved_recipe(self) -> Recipe:
        return self.recipe or model_class(self.model).recipe

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["recipe"] = dataclasses.asdict(self.resolved_recipe())
        data["seeds"] = list(self.seeds)
        data["options"] = dict(self.options)
        return data


@dataclasses.dataclass
class FoldResult:
    seed: int
    database: str
    subject: str
    keys: list[str]
    true: list[int]
    pred: list[int]
    proba: list[list[float]]
    n_train: int
    seconds: float
    train_loss: float
    samples_per_second: float
    val_uf1: float | None = None


class EvaluationError(FrMerError, ValueError):
    pass


def fold_seed(seed: int, fold_index: int) -> int:
    """A seed per (run seed, fold): independent streams, stable across resumes."""
    return int(np.random.SeedSequence([seed, fold_index]).generate_state(1)[0])


def _atomic_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _fold_path(out_dir: Path, seed: int, fold: Fold) -> Path:
    return out_dir / "folds" / f"seed{seed}" / f"{fold.database}-{fold.name}.json"


def _check_or_write_config(out_dir: Path, config: EvalConfig, cache_path: Path, overwrite: bool) -> None:
    record = {"config": config.as_dict(), "cache": str(Path(cache_path).resolve())}
    path = out_dir / CONFIG_FILE
    if path.exists() and not overwrite:
        stored = json.loads(path.read_text())
        # Runs written before a setting existed ran with its default.
        for key, default in EvalConfig(model=config.model).as_dict().items():
            stored.get("config", {}).setdefault(key, default)
        if stored != record:
            differ = sorted(k for k in record["config"] if stored.get("config", {}).get(k) != record["config"][k])
            if stored.get("cache") != record["cache"]:
                differ.append("cache")
            raise EvaluationError(
                f"{path}: {out_dir} holds a run with other settings ({', '.join(differ)}); "
                "use another --out, or --overwrite to start again"
            )
        return
    if overwrite and (out_dir / "folds").exists():
        for fold_file in (out_dir / "folds").rglob("*.json"):
            fold_file.unlink()
    _atomic_json(path, record)


def _fold_model(data: DeviceDataset, fold: Fold, fold_index: int, config: EvalConfig, seed: int):
    """The fold's freshly initialised model and its (training, validation) rows."""
    derived = fold_seed(seed, fold_index)
    seed_everything(derived)
    model = create_model(config.model, **dict(config.options)).to(data.device)
    train_index, val_index = fold.train_index, None
    if config.val_fraction > 0 and not config.weights_dir:
        train_index, val_index = validation_split(
            train_index, data.databases, data.subjects, config.val_fraction, derived)
    return model, train_index, val_index


def _predict_fold(data: DeviceDataset, fold: Fold, model, seed: int, train_index, val_index, seconds: float,
                  loss: float, rate: float) -> FoldResult:
    """The one look at the held-out subject, after training; and the validation score, if any."""
    device = data.device
    start = time.perf_counter()
    val_uf1 = None
    if val_index is not None and len(val_index):
        val_pred = predict_proba(model, data, torch.as_tensor(val_index)).argmax(1).cpu().numpy()
        val_uf1 = uf1(data.labels[torch.as_tensor(val_index, device=device)].cpu().numpy(), val_pred)
    proba = predict_proba(model, data, torch.as_tensor(fold.test_index)).cpu().numpy()
    seconds += time.perf_counter() - start
    true = data.labels[torch.as_tensor(fold.test_index, device=device)].cpu().numpy()
    return FoldResult(
        seed=seed, database=fold.database, subject=fold.name,
        keys=[data.keys[i] for i in fold.test_index],
        true=true.tolist(), pred=proba.argmax(1).tolist(), proba=np.round(proba, 6).tolist(),
        n_train=int(len(train_index)), seconds=seconds, train_loss=loss,
        samples_per_second=rate, val_uf1=val_uf1,
    )


def run_fold_stack(data: DeviceDataset, jobs: Sequence[tuple[int, int, Fold]], config: EvalConfig,
                   seed: int) -> list[FoldResult]:
    """Train the folds of ``jobs`` ((seed, fold index, fold), one seed) as one stacked model.

    Each fold's network starts from the same initialisation as in
    :func:`run_fold`; the stack's batch orders and dropout come from a seed
    derived from the run seed and the folds (:mod:`fr_mer.fold_stack`).
    """
    from fr_mer.fold_stack import train_stacked

    built = [_fold_model(data, fold, index, config, seed) for _, index, fold in jobs]
    stack_seed = int(np.random.SeedSequence([seed, 1 << 20, *(index for _, index, _ in jobs)]).generate_state(1)[0])
    seed_everything(stack_seed)
    logs = train_stacked([m for m, _, _ in built], data, [t for _, t, _ in built],
                         config.resolved_recipe(), seed=stack_seed)
    return [_predict_fold(data, fold, model, seed, train_index, val_index, log.seconds, log.final_loss,
                          log.samples_per_second)
            for (_, _, fold), (model, train_index, val_index), log in zip(jobs, built, logs)]


def run_fold(data: DeviceDataset, fold: Fold, fold_index: int, config: EvalConfig, seed: int) -> FoldResult:
    """Train on the fold's training subjects (or load its released weights) and predict the held-out one."""
    device = data.device
    model, train_index, val_index = _fold_model(data, fold, fold_index, config, seed)
    start = time.perf_counter()
    loss = float("nan")
    rate = float("nan")
    if config.weights_dir:
        weights = Path(config.weights_dir) / f"{fold.name}.pth"
        if not weights.is_file():
            raise EvaluationError(
                f"{weights}: no weights for held-out subject {fold.subject}; --weights DIR must hold "
                "one state dict per subject, named as STSTNet released them (sub01.pth, s01.pth, 006.pth)"
            )
        load_state_dict_file(weights, model, map_location=device)
        model.to(device)
    else:
        log = train_model(model, data, torch.as_tensor(train_index), config.resolved_recipe(),
                          seed=fold_seed(seed, fold_index))
        loss, rate = log.final_loss, log.samples_per_second
    return _predict_fold(data, fold, model, seed, train_index, val_index, time.perf_counter() - start, loss, rate)


def run_evaluation(cache_path: str | Path, out_dir: str | Path, config: EvalConfig, *,
                   device: torch.device, overwrite: bool = False, from_end: bool = False,
                   on_start: Callable[[int], None] | None = None,
                   on_fold: Callable[[FoldResult, bool], None] | None = None) -> dict:
    """Run (or resume) every seed x fold; returns the metrics written to ``metrics.json``.

    ``on_start(total_folds)`` is called once the folds are known; ``on_fold(result, resumed)``
    after each fold, with ``resumed`` True for folds read back from an earlier run.
    ``from_end`` works through the seed x fold list from its last entry: a
    second process started so on the same ``out_dir`` shares a run with one
    going forward (each skips the folds already written; at most the fold both
    reach at once is trained twice, with the same result). The reports are the
    same whichever the order.

    ``config.fold_batch`` > 1 (or 0, all) trains that many consecutive folds
    of a seed as one stacked model (:mod:`fr_mer.fold_stack`); the unfinished
    folds of an interrupted chunk are trained again as one, smaller, stack.
    """
    from fr_mer import report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.weights_dir and not Path(config.weights_dir).is_dir():
        raise EvaluationError(f"--weights {config.weights_dir}: no such folder")
    if config.fold_batch < 0:
        raise EvaluationError(f"fold_batch must be 0 (all folds of a seed) or more, got {config.fold_batch}")
    if config.fold_batch != 1 and not config.weights_dir:
        from fr_mer.fold_stack import check_stackable

        check_stackable(model_class(config.model), config.resolved_recipe())
    # An instance's inputs can depend on its options (e.g. which flow channels).
    model_inputs = create_model(config.model, **dict(config.options)).inputs
    data = load_dataset(
        cache_path, model_inputs, device, protocol=config.protocol,
        database=config.database,
        composite_list=Path(config.composite_list) if config.composite_list else None,
    )
    _check_or_write_config(out_dir, config, Path(cache_path), overwrite)
    folds = subject_folds(data.databases, data.subjects)
    _check_folds(folds, data)
    seeds = (config.seeds[0],) if config.weights_dir else config.seeds
    if on_start is not None:
        on_start(len(seeds) * len(folds))
    started = time.perf_counter()
    jobs = [(seed, index, fold) for seed in seeds for index, fold in enumerate(folds)]
    stack = 1 if config.weights_dir else (config.fold_batch or len(folds))
    results: dict[tuple[int, int], FoldResult] = {}
    for chunk in _chunks(list(reversed(jobs)) if from_end else jobs, stack):
        pending = []
        for seed, index, fold in chunk:
            path = _fold_path(out_dir, seed, fold)
            if path.exists():
                results[seed, index] = FoldResult(**json.loads(path.read_text()))
                if on_fold is not None:
                    on_fold(results[seed, index], True)
            else:
                pending.append((seed, index, fold))
        if not pending:
            continue
        if stack == 1:
            (seed, index, fold), = pending
            trained = [run_fold(data, fold, index, config, seed)]
        else:
            trained = run_fold_stack(data, pending, config, pending[0][0])
        for (seed, index, fold), result in zip(pending, trained):
            _atomic_json(_fold_path(out_dir, seed, fold), dataclasses.asdict(result))
            results[seed, index] = result
            if on_fold is not None:
                on_fold(result, False)
    wall = time.perf_counter() - started
    in_order = [results[seed, index] for seed, index, _ in jobs]
    return report.write_reports(out_dir, config, data, folds, in_order, seeds, wall)


def _chunks(jobs: Sequence[tuple[int, int, Fold]], size: int) -> list[list[tuple[int, int, Fold]]]:
    """Consecutive jobs of one seed, at most ``size`` per chunk (a stack trains one seed's folds)."""
    chunks: list[list[tuple[int, int, Fold]]] = []
    for job in jobs:
        if chunks and len(chunks[-1]) < size and chunks[-1][0][0] == job[0]:
            chunks[-1].append(job)
        else:
            chunks.append([job])
    return chunks


def _check_folds(folds: Sequence[Fold], data: DeviceDataset) -> None:
    for fold in folds:
        test_subjects = {(data.databases[i], data.subjects[i]) for i in fold.test_index}
        train_subjects = {(data.databases[i], data.subjects[i]) for i in fold.train_index}
        if len(test_subjects) != 1 or test_subjects & train_subjects:
            raise EvaluationError(f"fold {fold.subject}: held-out subject leaks into training")


def pooled_metrics(results: Sequence[FoldResult], database: str | None = None) -> dict[str, float]:
    true = [t for r in results if database in (None, r.database) for t in r.true]
    pred = [p for r in results if database in (None, r.database) for p in r.pred]
    return {"uf1": uf1(true, pred), "uar": uar(true, pred), "n": len(true)}
