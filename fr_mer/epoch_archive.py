"""The per-epoch archive of an ``--audit-selection`` run: every fold's held-out predictions after every epoch.

The per-fold logs (:class:`EpochLog`, ``folds/seed<S>/<database>-<subject>.audit.json``) are a
run's working files, one JSON each, and are not kept when a run is archived. The report step
(:func:`fr_mer.selection_audit.write_selection_audit`) also writes them all into one compressed
file, ``OUT/epoch_predictions.npz`` (:data:`~fr_mer.results_folder.EPOCH_PREDICTIONS_FILE`), from
which :func:`fr_mer.selection_audit.recomputed_audit` computes ``selection_audit.json`` again:
the best-epoch figures are then recomputed from the predictions, not re-aggregated from the
stored figures.

The file (``numpy.savez_compressed``, read with ``allow_pickle=False``: no object arrays) holds,
for F folds (every seed's, in the run's order), N held-out samples (the folds' in turn) and E
epochs (the most any fold ran):

=================  ==========================  ======================================================
``header``         0-d str                     JSON of :class:`ArchiveHeader`: the format and version,
                                               the run (model, protocol, database, seeds, classes,
                                               scopes) and the last-epoch disagreements
``fold_seed``      (F,) int64                  the fold's seed
``fold_database``  (F,) str                    the held-out database
``fold_subject``   (F,) str                    the fold's name (``FoldResult.subject``)
``fold_samples``   (F,) int64                  its held-out samples: the next rows of the sample arrays
``fold_epochs``    (F,) int64                  the epochs it ran
``key``            (N,) str                    the sample's key
``true``           (N,) int16                  its label (an index into ``classes``)
``pred``           (N, E) int16                the predicted class after each epoch (the argmax of the
                                               unrounded probabilities); -1 past the fold's last epoch
``proba``          (N, E, classes) uint16      the probabilities in units of 1e-4 (4 decimals, as
                                               ``predictions.csv``); 0 past the fold's last epoch
=================  ==========================  ======================================================

The figures read ``pred`` and ``true`` only, so they are recomputed exactly; the probabilities
are kept for other questions (a 6-decimal log rounds to 4 here).
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from fr_mer import atomic
from fr_mer.config import from_record, settings, to_record
from fr_mer.errors import FrMerError, ParameterError
from fr_mer.limits import MAX_EPOCH_ARCHIVE_BYTES
from fr_mer.results_folder import FULL_SCOPE
from fr_mer.run_plan import EvaluationError

#: ``header["format"]``: what makes the file this archive rather than any ``.npz``.
ARCHIVE_FORMAT = "fr-mer per-epoch held-out predictions"
ARCHIVE_VERSION = 1
#: ``proba`` holds round(probability * PROBABILITY_UNITS).
PROBABILITY_UNITS = 10_000
ARRAYS = ("header", "fold_seed", "fold_database", "fold_subject", "fold_samples", "fold_epochs", "key", "true",
          "pred", "proba")


@settings
class EpochLog:
    """One (seed, fold)'s held-out predictions after every training epoch, in the fold's sample order."""

    seed: int
    database: str
    subject: str  # the fold's name, as FoldResult.subject
    keys: list[str]
    true: list[int]
    pred: list[list[int]]  # [epoch][sample]: the argmax of the unrounded probabilities
    proba: list[list[list[float]]]  # [epoch][sample][class], 6 decimals in a fold's log, 4 in the archive

    def __post_init__(self) -> None:
        n = len(self.keys)
        if len(self.true) != n or not self.pred or len(self.proba) != len(self.pred) or \
                any(len(epoch) != n for epoch in self.pred) or any(len(epoch) != n for epoch in self.proba):
            raise ParameterError(f"the log's epochs and samples do not line up ({n} keys, {len(self.true)} "
                                 f"labels, {len(self.pred)} epochs of predictions, {len(self.proba)} of "
                                 "probabilities)")


@settings
class ArchiveHeader:
    """What besides the predictions ``selection_audit.json`` is computed from."""

    model: str
    protocol: str
    database: str | None
    seeds: list[int]
    classes: list[str]
    scopes: list[str]  # the audit's scopes: full, then each database's slice
    last_epoch_disagreements: int
    format: str = ARCHIVE_FORMAT
    version: int = ARCHIVE_VERSION

    def __post_init__(self) -> None:
        if self.format != ARCHIVE_FORMAT:
            raise ParameterError(f"format {self.format!r} is not {ARCHIVE_FORMAT!r}")
        if self.version != ARCHIVE_VERSION:
            raise ParameterError(f"version {self.version}: this fr-mer reads version {ARCHIVE_VERSION} (a newer "
                                 "fr-mer wrote it)")
        if not self.seeds or not self.classes or not self.scopes or len(set(self.seeds)) != len(self.seeds):
            raise ParameterError("seeds, classes and scopes must be non-empty, the seeds distinct")


def write_epoch_archive(path: Path, header: ArchiveHeader, logs: Sequence[EpochLog]) -> None:
    """Every fold's ``logs`` (of the run ``header`` describes) into ``path``, atomically."""
    n_classes, n_epochs = len(header.classes), max(len(log.pred) for log in logs)
    n_samples = sum(len(log.keys) for log in logs)
    pred = np.full((n_samples, n_epochs), -1, np.int16)
    proba = np.zeros((n_samples, n_epochs, n_classes), np.uint16)
    start = 0
    for log in logs:
        stop, ran = start + len(log.keys), len(log.pred)
        pred[start:stop, :ran] = np.asarray(log.pred, np.int16).reshape(ran, stop - start).T
        units = np.rint(np.asarray(log.proba, np.float64).reshape(ran, stop - start, n_classes) * PROBABILITY_UNITS)
        proba[start:stop, :ran] = units.astype(np.uint16).transpose(1, 0, 2)
        start = stop
    arrays = {
        "header": np.array(json.dumps(to_record(header))),
        "fold_seed": np.array([log.seed for log in logs], np.int64),
        "fold_database": np.array([log.database for log in logs], str),
        "fold_subject": np.array([log.subject for log in logs], str),
        "fold_samples": np.array([len(log.keys) for log in logs], np.int64),
        "fold_epochs": np.array([len(log.pred) for log in logs], np.int64),
        "key": np.array([key for log in logs for key in log.keys], str),
        "true": np.array([t for log in logs for t in log.true], np.int16),
        "pred": pred, "proba": proba,
    }
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def read_epoch_archive(path: str | Path) -> tuple[ArchiveHeader, list[EpochLog]]:
    """The header and every fold's log of the archive ``path``; raises :class:`EvaluationError` naming the file
    when it is missing, damaged, of another format or inconsistent."""
    path = Path(path)
    try:
        return _read(path)
    except FrMerError as error:
        raise EvaluationError(f"{path}: {error}; this is not a sound per-epoch archive of an fr-mer "
                              "--audit-selection run: restore it, or write it again with the report step (the same "
                              "fr-mer evaluate command on the results folder, its folds/ present)") from None


def _read(path: Path) -> tuple[ArchiveHeader, list[EpochLog]]:
    if not path.is_file():
        raise ParameterError("no such file")
    arrays = _load_arrays(path)
    header_text = arrays["header"]
    if header_text.shape != () or header_text.dtype.kind != "U":
        raise ParameterError("its header is not one string")
    try:
        header = from_record(ArchiveHeader, json.loads(str(header_text)), source="its header")
    except json.JSONDecodeError as error:
        raise ParameterError(f"its header is not JSON ({error})") from None
    seeds, databases, subjects, samples, epochs = (arrays[name] for name in ARRAYS[1:6])
    n_folds = len(seeds) if seeds.ndim == 1 else 0
    if n_folds == 0:
        raise ParameterError("it holds no fold")
    for array, kind, name in ((seeds, "i", "fold_seed"), (databases, "U", "fold_database"),
                              (subjects, "U", "fold_subject"), (samples, "i", "fold_samples"),
                              (epochs, "i", "fold_epochs")):
        _expect(array, kind, (n_folds,), name)
    if samples.min() < 0 or epochs.min() < 1:
        raise ParameterError("a fold has a negative sample count or no epoch")
    key, true, pred, proba = (arrays[name] for name in ARRAYS[6:])
    n_samples, n_epochs = int(samples.sum()), int(epochs.max())
    _expect(key, "U", (n_samples,), "key")
    _expect(true, "i", (n_samples,), "true")
    _expect(pred, "i", (n_samples, n_epochs), "pred")
    _expect(proba, "u", (n_samples, n_epochs, len(header.classes)), "proba")
    if set(seeds.tolist()) != set(header.seeds):
        raise ParameterError(f"the folds' seeds {sorted(set(seeds.tolist()))} are not the header's {header.seeds}")
    if not set(header.scopes) <= {FULL_SCOPE, *databases.tolist()}:
        raise ParameterError(f"its scopes {header.scopes} are not {FULL_SCOPE!r} and the folds' databases")
    names = list(zip(seeds.tolist(), databases.tolist(), subjects.tolist()))
    if len(set(names)) != len(names):
        raise ParameterError("a (seed, database, subject) fold is there twice")
    n_classes = len(header.classes)
    ran = np.arange(n_epochs)[None, :] < np.repeat(epochs, samples)[:, None]
    if ((true < 0) | (true >= n_classes)).any() or ((pred < 0) | (pred >= n_classes))[ran].any() \
            or (pred[~ran] != -1).any() or (proba > PROBABILITY_UNITS).any():
        raise ParameterError(f"a label or prediction is not one of the {n_classes} classes, or a probability is "
                             "above 1")
    logs, start = [], 0
    for (seed, database, subject), count, last in zip(names, samples.tolist(), epochs.tolist()):
        rows = slice(start, start + count)
        logs.append(EpochLog(seed=seed, database=database, subject=subject, keys=key[rows].tolist(),
                             true=true[rows].tolist(), pred=pred[rows, :last].T.tolist(),
                             proba=(proba[rows, :last].transpose(1, 0, 2) / PROBABILITY_UNITS).tolist()))
        start += count
    return header, logs


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The archive's arrays, each checked against its stored size before it is read (a damaged or hostile
    header cannot make numpy allocate more than the file holds)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            if sorted(members) != sorted(f"{name}.npy" for name in ARRAYS):
                raise ParameterError(f"it holds {sorted(members)[:12]}, not the archive's arrays {list(ARRAYS)}")
            if sum(info.file_size for info in members.values()) > MAX_EPOCH_ARCHIVE_BYTES:
                raise ParameterError(f"its arrays hold more than {MAX_EPOCH_ARCHIVE_BYTES} bytes")
            arrays = {}
            for name in ARRAYS:
                info = members[f"{name}.npy"]
                data = io.BytesIO(archive.read(info))
                version = np.lib.format.read_magic(data)
                if version not in ((1, 0), (2, 0)):
                    raise ParameterError(f"{name}: .npy version {version}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(data)
                if dtype.hasobject or int(np.prod(shape)) * dtype.itemsize > info.file_size:
                    raise ParameterError(f"{name}: its header declares more than the file holds, or objects")
                data.seek(0)
                arrays[name] = np.lib.format.read_array(data, allow_pickle=False)
            return arrays
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as error:
        if isinstance(error, FrMerError):
            raise
        raise ParameterError(f"not a readable .npz archive ({type(error).__name__}: {error})") from None


def _expect(array: np.ndarray, kind: str, shape: tuple[int, ...], name: str) -> None:
    if array.shape != shape or array.dtype.kind != kind:
        raise ParameterError(f"{name} is {array.dtype} {array.shape}, not of kind {kind!r} and shape {shape}")
