"""The selection audit (``fr-mer evaluate --audit-selection``): what choosing epochs on the test subjects gives.

fr-mer's result is each fold's model after its last training epoch. Many of the
field's published composite figures instead take, for every held-out subject,
the epoch at which that subject scored best. The audit prints both from one run,
so a reader sees how much of a published figure the selection alone can make:

- While a fold trains (:func:`fr_mer.evaluation.run_fold`), :class:`EpochRecorder`
  predicts its held-out samples after every epoch, as :func:`fr_mer.training.predict_proba`
  does after the last one: evaluation mode and ``no_grad`` (batch-norm running
  statistics do not move), no random generator drawn from, every module's
  train/eval mode put back. Training is unchanged, so the run's figures are too.
  The fold's probabilities per epoch go to ``folds/seed<S>/<database>-<subject>.audit.json``
  (:class:`EpochLog`), written before the fold's own file. Nothing else reads them.
- The report step (:func:`fr_mer.report.write_reports`) turns the logs of a finished
  run into ``selection_audit.json`` and ``selection_audit.png``
  (:func:`write_selection_audit`): per seed, and as mean and sd over seeds, for the
  pooled predictions (``full``) and each database's slice, the UF1 and UAR
  (:mod:`fr_mer.metrics`) of three ways of taking each fold's predictions
  (:data:`FIGURES`, docs/protocols.md "The selection audit"), and ``epoch_predictions.npz``, every
  log in one compressed file (:mod:`fr_mer.epoch_archive`), which a results folder archived without
  its ``folds/`` keeps: :func:`recomputed_audit` computes ``selection_audit.json`` again from it alone.

Epochs are numbered from 1 in the files. Ties go to the earliest epoch.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fr_mer.config import from_record, to_record
from fr_mer.epoch_archive import ArchiveHeader, EpochLog, read_epoch_archive, write_epoch_archive
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.metrics import mean_sd_text, pooled_metrics, seed_summary
from fr_mer.results_folder import EPOCH_PREDICTIONS_FILE, FULL_SCOPE, FoldResult, ResultsFolder, atomic_json
from fr_mer.run_plan import EvaluationError, FoldJob, RunPlan
from fr_mer.training import predict_proba

#: The audit's figures, the honest one first: each fold's last epoch (the run's own result);
#: each fold's epoch of highest accuracy on its own held-out samples; the one epoch, the same for
#: every fold, whose pooled UF1 over all held-out samples is highest.
FIGURES = ("last_epoch", "best_epoch_per_subject", "best_single_epoch")
TITLES = {"last_epoch": "last epoch (the result)", "best_epoch_per_subject": "best epoch per subject",
          "best_single_epoch": "best single epoch for all"}
AUDIT_FILE = "selection_audit.json"
PLOT_FILE = "selection_audit.png"


class EpochRecorder:
    """:func:`~fr_mer.training.train_model`'s ``on_epoch`` hook: ``model``'s class probabilities of the
    rows ``index`` of ``data`` after each epoch, kept in :attr:`proba` (one (rows, classes) array each)."""

    def __init__(self, model: torch.nn.Module, data, index) -> None:
        self.model, self.data = model, data
        self.index = torch.as_tensor(index, device=data.device)
        self.proba: list[np.ndarray] = []

    def __call__(self, epoch: int, loss: float) -> None:
        modes = [(module, module.training) for module in self.model.modules()]
        try:
            self.proba.append(predict_proba(self.model, self.data, self.index).cpu().numpy())
        finally:
            for module, training in modes:
                module.training = training

    def log(self, result: FoldResult) -> EpochLog:
        """The epochs recorded, as the log of the fold whose final ``result`` this is."""
        return EpochLog(seed=result.seed, database=result.database, subject=result.subject,
                        keys=list(result.keys), true=list(result.true),
                        pred=[p.argmax(1).tolist() for p in self.proba],
                        proba=[np.round(p, 6).tolist() for p in self.proba])


def audited(plan: RunPlan) -> RunPlan:
    """``plan`` with the audit on; raises :class:`ParameterError` where there are no per-fold epochs to log."""
    if plan.weights_dir is not None:
        raise ParameterError("--audit-selection logs the held-out subject after every training epoch, and "
                             "--weights trains nothing: drop one of them")
    if plan.stack != 1:
        raise ParameterError(
            f"--audit-selection needs folds trained one by one (a stack of folds has no per-fold epoch hook), "
            f"and this run stacks them (--fold-batch {plan.config.fold_batch}): drop --fold-batch or give "
            "--fold-batch 1 (a results folder recorded with another value needs a fresh --out)")
    return dataclasses.replace(plan, audit_selection=True)


def write_log(folder: ResultsFolder, log: EpochLog) -> None:
    atomic_json(folder.audit_path(log.seed, log.database, log.subject), to_record(log), indent=None)


def read_log(path: Path) -> EpochLog:
    remedy = "delete it and the fold's file beside it to train that fold again"
    try:
        return from_record(EpochLog, json.loads(path.read_text()), source=str(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"{path}: this fold's per-epoch log is damaged ({error}); {remedy}") from None
    except FrMerError as error:
        raise EvaluationError(f"{error}; {remedy}") from None


def check_finished_folds_logged(folder: ResultsFolder, jobs: Sequence[FoldJob]) -> None:
    """Before an ``--audit-selection`` run resumes: every finished fold must have its log, or the audit
    would leave it out; raises :class:`EvaluationError` naming them and what to do."""
    unlogged = [folder.fold_path(job) for job in jobs if folder.fold_path(job).exists()
                and not folder.audit_path(job.seed, job.fold.database, job.fold.name).exists()]
    if unlogged:
        raise EvaluationError(
            f"--audit-selection: {len(unlogged)} finished fold(s) of {folder.path} have no per-epoch log (the "
            f"run that trained them was without --audit-selection; the first is {unlogged[0]}), so the audit "
            "would be partial: resume without --audit-selection, or train those folds again with it (delete "
            "their files, or --overwrite)")


@dataclasses.dataclass(frozen=True)
class _Taken:
    """One fold's predictions as :func:`~fr_mer.metrics.pooled_metrics` reads them."""

    database: str
    true: list[int]
    pred: list[int]


def best_epoch(log: EpochLog) -> int:
    """The (0-based) epoch of the highest accuracy on the fold's held-out samples; the earliest on a tie."""
    true = np.asarray(log.true)
    accuracy = (np.asarray(log.pred) == true[None, :]).mean(axis=1)
    return int(np.argmax(accuracy))  # argmax takes the first maximum


def audit_figures(logs: Sequence[EpochLog], seeds: Sequence[int], scopes: Sequence[str],
                  n_classes: int) -> dict[str, object]:
    """The three :data:`FIGURES` (each scope's :func:`~fr_mer.metrics.seed_summary`, as in ``metrics.json``),
    the epochs they took (from 1), and every seed's pooled UF1 after each epoch.

    ``logs``: every fold of every seed. The single best epoch is looked for among the
    epochs that every fold of the seed ran (folds of fewer training samples can run more,
    :meth:`~fr_mer.models.base.Recipe.for_training_size`).
    """
    scores: dict[str, dict[str, dict[str, dict]]] = {name: {scope: {} for scope in scopes} for name in FIGURES}
    selected: dict[str, dict[str, object]] = {}
    curves: dict[str, list[float]] = {}
    for seed in seeds:
        mine = [log for log in logs if log.seed == seed]
        common = min(len(log.pred) for log in mine)

        def taken(epochs: Sequence[int]) -> list[_Taken]:
            return [_Taken(log.database, log.true, log.pred[e]) for log, e in zip(mine, epochs)]

        curve = [pooled_metrics(taken([e] * len(mine)), None, n_classes)["uf1"] for e in range(common)]
        single = int(np.argmax(curve))
        per_subject = [best_epoch(log) for log in mine]
        chosen = {"last_epoch": taken([len(log.pred) - 1 for log in mine]),
                  "best_epoch_per_subject": taken(per_subject),
                  "best_single_epoch": taken([single] * len(mine))}
        for name, predictions in chosen.items():
            for scope in scopes:
                scores[name][scope][str(seed)] = pooled_metrics(predictions, None if scope == FULL_SCOPE else scope,
                                                                n_classes)
        selected[str(seed)] = {
            "best_single_epoch": single + 1,
            "best_epoch_per_subject": {f"{log.database}/{log.subject}": e + 1 for log, e in zip(mine, per_subject)},
            "last_epoch": {f"{log.database}/{log.subject}": len(log.pred) for log in mine},
        }
        curves[str(seed)] = [round(value, 4) for value in curve]
    return {**{name: {scope: seed_summary(scores[name][scope]) for scope in scopes} for name in FIGURES},
            "selected_epochs": selected, "uf1_by_epoch": curves}


def write_selection_audit(out_dir: Path, results: Sequence[FoldResult], *, model: str, protocol: str,
                          database: str | None, seeds: Sequence[int], classes: Sequence[str],
                          scopes: Sequence[str]) -> str:
    """``selection_audit.json``, ``.png`` and the logs' archive (``epoch_predictions.npz``) from the run's
    per-epoch logs, if every fold of ``results`` has one.

    Returns the lines for ``summary.md``: the audit's table; a note when only some folds have
    logs (no audit is written then: a partial one would mislead); nothing when none has.
    An audit left from an earlier run is removed first.
    """
    out_dir = Path(out_dir)
    folder = ResultsFolder(out_dir)
    for name in (AUDIT_FILE, PLOT_FILE, EPOCH_PREDICTIONS_FILE):
        (out_dir / name).unlink(missing_ok=True)
    paths = [folder.audit_path(r.seed, r.database, r.subject) for r in results]
    missing = [path for path in paths if not path.exists()]
    if len(missing) == len(paths):
        return ""
    if missing:
        return (f"\nSelection audit: not written, {len(missing)} of {len(paths)} folds have no per-epoch log "
                f"(first: {missing[0]}); they were trained without --audit-selection. Train them again with it "
                "(delete their fold files, or --overwrite) for the audit.\n")
    logs = [read_log(path) for path in paths]
    for log, result, path in zip(logs, results, paths):
        if log.keys != result.keys or log.true != result.true:
            raise EvaluationError(f"{path}: this per-epoch log holds other samples than its fold's file; delete "
                                  "both to train that fold again")
    disagreements = sum(int(a != b) for log, result in zip(logs, results) for a, b in zip(log.pred[-1], result.pred))
    header = ArchiveHeader(model=model, protocol=protocol, database=database, seeds=list(seeds),
                           classes=list(classes), scopes=list(scopes), last_epoch_disagreements=disagreements)
    audit = audit_record(header, logs)
    (out_dir / AUDIT_FILE).write_text(json.dumps(audit, indent=2))
    write_epoch_archive(out_dir / EPOCH_PREDICTIONS_FILE, header, logs)
    _plot(out_dir / PLOT_FILE, audit, scopes)
    return _markdown(audit, scopes)


def audit_record(header: ArchiveHeader, logs: Sequence[EpochLog]) -> dict[str, object]:
    """``selection_audit.json``'s record: the run ``header`` describes and the figures of its ``logs`` (every
    fold of every seed, in the run's order)."""
    epochs = [len(log.pred) for log in logs]
    return {
        "model": header.model, "protocol": header.protocol, "database": header.database,
        "seeds": list(header.seeds), "classes": list(header.classes),
        "subject_score": "accuracy on the fold's own held-out samples",
        "single_epoch_score": "UF1 of every fold's predictions pooled (scope full)",
        "tie_rule": "earliest epoch",
        "epochs": {"per_fold_min": min(epochs), "per_fold_max": max(epochs)},
        #: samples whose last-epoch prediction in the log is not the fold file's (0 but on a device
        #: whose kernels are not deterministic): the last-epoch figure is then not exactly the run's
        "last_epoch_disagreements": header.last_epoch_disagreements,
        **audit_figures(logs, header.seeds, header.scopes, len(header.classes)),
    }


def recomputed_audit(out_dir: str | Path) -> dict[str, object]:
    """``OUT/selection_audit.json``'s record computed again from ``OUT/epoch_predictions.npz`` alone (the per-fold
    logs and the fold files are not read); raises :class:`EvaluationError` naming the archive when it is missing
    or unsound."""
    header, logs = read_epoch_archive(Path(out_dir) / EPOCH_PREDICTIONS_FILE)
    return audit_record(header, logs)


def _markdown(audit: dict, scopes: Sequence[str]) -> str:
    lines = ["", "## Selection audit (not a result)", "",
             "What choosing epochs on the held-out subjects would have printed (UF1, mean ± sd over seeds; "
             f"{AUDIT_FILE}). Only the last epoch is fr-mer's figure.", "",
             "| scope | " + " | ".join(TITLES[name] for name in FIGURES) + " |", "|---" * (len(FIGURES) + 1) + "|"]
    for scope in scopes:
        lines.append(f"| {scope} | " + " | ".join(
            mean_sd_text(audit[name][scope]["uf1"], audit[name][scope]["uf1_std"]) for name in FIGURES) + " |")
    if audit["last_epoch_disagreements"]:
        lines += ["", f"{audit['last_epoch_disagreements']} last-epoch predictions of the logs differ from the "
                  "run's (a device whose kernels are not deterministic)."]
    return "\n".join(lines) + "\n"


def _plot(path: Path, audit: dict, scopes: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colours = {"last_epoch": "black", "best_epoch_per_subject": "tab:red", "best_single_epoch": "tab:green"}
    fig, (curve_ax, bar_ax) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=100)
    curves = list(audit["uf1_by_epoch"].values())
    n = min(len(curve) for curve in curves)
    epochs = np.arange(1, n + 1)
    for curve in curves:
        curve_ax.plot(epochs, curve[:n], color="tab:gray", linewidth=0.6, alpha=0.6)
    curve_ax.plot(epochs, np.mean([curve[:n] for curve in curves], axis=0), color="tab:blue", linewidth=1.2,
                  label="pooled UF1 after each epoch (mean of seeds)")
    for name in FIGURES:
        curve_ax.axhline(audit[name][FULL_SCOPE]["uf1"], color=colours[name], linestyle="--", linewidth=0.9,
                         label=TITLES[name])
    curve_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    curve_ax.set_xlabel("epoch")
    curve_ax.set_ylabel("UF1 (full)")
    curve_ax.legend(fontsize=6, loc="lower right")
    width = 0.8 / len(FIGURES)
    for i, name in enumerate(FIGURES):
        x = np.arange(len(scopes)) + (i - (len(FIGURES) - 1) / 2) * width
        bar_ax.bar(x, [audit[name][s]["uf1"] for s in scopes], width, color=colours[name], label=TITLES[name],
                   yerr=[audit[name][s]["uf1_std"] or 0.0 for s in scopes], capsize=2)
    bar_ax.set_xticks(range(len(scopes)), list(scopes))
    bar_ax.set_ylabel("UF1 (mean, bars: sd over seeds)")
    bar_ax.set_ylim(0, 1.25)
    bar_ax.set_yticks(np.linspace(0, 1, 6))
    bar_ax.legend(fontsize=6, loc="upper center", ncol=len(FIGURES))
    fig.suptitle(f"{audit['model']}: selection audit, seeds {audit['seeds']} (only the last epoch is a result)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
