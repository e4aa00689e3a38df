"""The per-epoch archive of an ``--audit-selection`` run (``epoch_predictions.npz``): compressed and small, the
audit recomputed from it alone, damaged or foreign files refused naming the file, resume, benchmarks/audit_table.py."""
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.epoch_archive import ArchiveHeader, EpochLog, read_epoch_archive, write_epoch_archive
from fr_mer.evaluation import EvalConfig, run_evaluation
from fr_mer.limits import MAX_EPOCH_ARCHIVE_BYTES
from fr_mer.results_folder import EPOCH_PREDICTIONS_FILE
from fr_mer.run_plan import EvaluationError
from fr_mer.selection_audit import AUDIT_FILE, read_log, recomputed_audit, write_selection_audit
from tests.cachefactory import small_composite
from tests.test_result_tables import script
from tests.test_selection_audit import RECIPE, Interrupt, fold_files, stop_after, write_hand_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = ("negative", "positive", "surprise")


def config(listing, seeds):
    return EvalConfig(model="ststnet", recipe=RECIPE, seeds=seeds, composite_list=str(listing))


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    """A finished ``fr-mer evaluate --audit-selection`` of 2 seeds x 3 folds (3 epochs each), made once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audited")
    cache, listing = small_composite(root, subjects_per_db=1)
    out = root / "run"
    result = CliRunner().invoke(main, [
        "evaluate", "--cache", str(cache), "--model", "ststnet", "--epochs", "3", "--seeds", "2",
        "--composite-list", str(listing), "--device", "cpu", "--threads", "1", "--audit-selection",
        "--out", str(out)])
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


def copy_without_folds(run, destination):
    shutil.copytree(run, destination, ignore=shutil.ignore_patterns("folds"))
    return destination


def test_archive_is_compressed_and_holds_every_folds_log(audited_run):
    path = audited_run / EPOCH_PREDICTIONS_FILE
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    assert members and all(info.compress_type == zipfile.ZIP_DEFLATED for info in members)
    header, logs = read_epoch_archive(path)
    assert (header.model, header.protocol, header.seeds, header.classes) == ("ststnet", "composite", [0, 1],
                                                                             list(CLASSES))
    assert header.scopes == ["full", "casme2", "samm", "smic"] and header.last_epoch_disagreements == 0
    # every fold's log, in the run's order: keys, labels and predictions exactly, probabilities to 4 decimals
    fold_logs = [read_log(fold.with_suffix(".audit.json")) for fold in fold_files(audited_run)]
    assert len(logs) == len(fold_logs) == 6
    assert sorted((log.seed, log.database, log.subject) for log in logs) == sorted(
        (log.seed, log.database, log.subject) for log in fold_logs)
    by_fold = {(log.seed, log.database, log.subject): log for log in fold_logs}
    for log in logs:
        original = by_fold[(log.seed, log.database, log.subject)]
        assert (log.keys, log.true, log.pred) == (original.keys, original.true, original.pred)
        assert len(log.pred) == RECIPE.epochs
        assert np.abs(np.asarray(log.proba) - np.asarray(original.proba)).max() <= 5e-5 + 1e-12


def test_audit_recomputed_from_the_archive_alone_is_the_stored_audit(audited_run, tmp_path):
    stored = json.loads((audited_run / AUDIT_FILE).read_text())
    assert recomputed_audit(audited_run) == stored
    # the archive alone: no folds/, no fold files, no per-fold logs; the JSON text is the same too
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(audited_run / EPOCH_PREDICTIONS_FILE, alone)
    recomputed = recomputed_audit(alone)
    assert recomputed == stored
    assert json.dumps(recomputed, indent=2) == (audited_run / AUDIT_FILE).read_text()


def test_ragged_epochs_round_trip_and_a_partial_audit_leaves_no_archive(tmp_path):
    # the hand run of test_selection_audit: seed 1's samm/006 ran a fourth epoch (its best), the others three
    results = write_hand_run(tmp_path)
    write_selection_audit(tmp_path, results, model="hand", protocol="composite", database=None, seeds=(0, 1),
                          classes=CLASSES, scopes=("full", "casme2", "samm"))
    stored = json.loads((tmp_path / AUDIT_FILE).read_text())
    shutil.rmtree(tmp_path / "folds")
    assert recomputed_audit(tmp_path) == stored
    assert stored["selected_epochs"]["1"]["best_epoch_per_subject"] == {"casme2/sub01": 1, "samm/006": 4}
    with np.load(tmp_path / EPOCH_PREDICTIONS_FILE, allow_pickle=False) as arrays:
        assert arrays["fold_epochs"].tolist() == [3, 3, 3, 4]
        assert arrays["pred"].shape == (12, 4) and (arrays["pred"][:9, 3] == -1).all()

    # a later report whose folds only partly have logs writes no audit, and leaves no stale archive
    results = write_hand_run(tmp_path)
    (tmp_path / "folds" / "seed1" / "samm-006.audit.json").unlink()
    write_selection_audit(tmp_path, results, model="hand", protocol="composite", database=None, seeds=(0, 1),
                          classes=CLASSES, scopes=("full",))
    assert not (tmp_path / AUDIT_FILE).exists() and not (tmp_path / EPOCH_PREDICTIONS_FILE).exists()


def test_a_composite_sized_archive_is_well_under_a_megabyte(tmp_path):
    """The composite's 442 samples in 68 folds x 20 epochs x 3 classes x 10 seeds, with random probabilities
    (a trained model's are more often near 0 or 1, and compress better)."""
    rng = np.random.default_rng(0)
    sizes = [6] * 34 + [7] * 34
    logs = []
    for seed in range(10):
        for fold, size in enumerate(sizes):
            logits = rng.normal(0, 3, (20, size, 3))
            proba = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
            logs.append(EpochLog(seed=seed, database="casme2", subject=f"sub{fold:02d}",
                                 keys=[f"casme2/sub{fold:02d}/EP{i:02d}_{fold:02d}f" for i in range(size)],
                                 true=rng.integers(0, 3, size).tolist(), pred=proba.argmax(-1).tolist(),
                                 proba=np.round(proba, 6).tolist()))
    header = ArchiveHeader(model="fr", protocol="composite", database=None, seeds=list(range(10)),
                           classes=list(CLASSES), scopes=["full", "casme2"], last_epoch_disagreements=0)
    path = tmp_path / EPOCH_PREDICTIONS_FILE
    write_epoch_archive(path, header, logs)
    assert sum(len(log.keys) for log in logs) == 4420
    assert path.stat().st_size < 600_000
    assert read_epoch_archive(path)[1][5].pred == logs[5].pred


# -- damaged and foreign files ---------------------------------------------------------------------------

def arrays_of(path):
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def header_with(arrays, **changes):
    return np.array(json.dumps({**json.loads(str(arrays["header"])), **changes}))


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def with_member(path, name, data):
    """``path`` rewritten with its member ``name`` replaced by ``data``."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, content in members.items():
            archive.writestr(member, content)


def huge_header_npy():
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<i2", "fortran_order": False, "shape": (10**6, 10**6)})
    return buffer.getvalue() + b"\0" * 64


DAMAGES = {
    "garbage": (lambda path: path.write_bytes(b"not an archive at all" * 10), "not a readable .npz"),
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]), "not a readable .npz"),
    "foreign npz": (lambda path: np.savez_compressed(path, weights=np.zeros(3)), "not the archive's arrays"),
    "other format": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "header": header_with(
        arrays_of(path), format="other predictions")}), "format 'other predictions' is not"),
    "newer version": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "header": header_with(
        arrays_of(path), version=2)}), "a newer fr-mer wrote it"),
    "unknown scope": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "header": header_with(
        arrays_of(path), scopes=["full", "cohort"])}), "not 'full' and the folds' databases"),
    "header not JSON": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "header": np.array("{oops")}),
                        "its header is not JSON"),
    "prediction out of range": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "pred": np.where(
        arrays_of(path)["pred"] >= 0, 7, -1).astype(np.int16)}), "not one of the 3 classes"),
    "samples do not add up": (lambda path: np.savez_compressed(path, **{**arrays_of(path), "key": arrays_of(path)[
        "key"][:-1]}), "key is"),
    "object array": (lambda path: with_member(path, "key.npy", npy_bytes(np.array([{"a": 1}], dtype=object))),
                     "objects"),
    "huge declared shape": (lambda path: with_member(path, "pred.npy", huge_header_npy()), "declares more"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_or_foreign_archive_is_refused_naming_the_file(tmp_path, damage):
    results = write_hand_run(tmp_path)
    write_selection_audit(tmp_path, results, model="hand", protocol="composite", database=None, seeds=(0, 1),
                          classes=CLASSES, scopes=("full",))
    path = tmp_path / EPOCH_PREDICTIONS_FILE
    spoil, says = DAMAGES[damage]
    spoil(path)
    with pytest.raises(EvaluationError) as raised:
        recomputed_audit(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and says in message and "write it again" in message, message


def test_a_missing_archive_is_named_and_the_size_bound_holds(tmp_path):
    with pytest.raises(EvaluationError, match=f"{tmp_path / EPOCH_PREDICTIONS_FILE}: no such file"):
        recomputed_audit(tmp_path)
    assert MAX_EPOCH_ARCHIVE_BYTES >= 4420 * 800 * (2 + 2 * 7)  # 10 seeds of the composite, 800 epochs, 7 classes


# -- resume ----------------------------------------------------------------------------------------------

def test_a_resumed_audit_run_writes_the_archive_of_an_uninterrupted_one(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    reference = tmp_path / "reference"
    run_evaluation(cache, reference, config(listing, (0,)), device=torch.device("cpu"), audit_selection=True)
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        run_evaluation(cache, out, config(listing, (0,)), device=torch.device("cpu"), audit_selection=True,
                       on_fold=stop_after(out, 2))
    assert len(fold_files(out)) == 2 and not (out / EPOCH_PREDICTIONS_FILE).exists()
    run_evaluation(cache, out, config(listing, (0,)), device=torch.device("cpu"), audit_selection=True)
    assert read_epoch_archive(out / EPOCH_PREDICTIONS_FILE) == read_epoch_archive(reference / EPOCH_PREDICTIONS_FILE)
    shutil.rmtree(out / "folds")
    assert recomputed_audit(out) == json.loads((reference / AUDIT_FILE).read_text())


# -- benchmarks/audit_table.py ---------------------------------------------------------------------------

def test_audit_table_recomputes_a_copied_folder_from_its_archive(audited_run, tmp_path, capsys):
    table = script("audit_table")
    root = tmp_path / "audit"
    run = copy_without_folds(audited_run, root / "ststnet")
    models = table.load_models(root)
    assert models["ststnet"]["recomputed"] == ["ststnet"]
    stored = json.loads((run / AUDIT_FILE).read_text())
    assert models["ststnet"]["figures"]["best_epoch_per_subject"]["full"] == {
        seed: (m["uf1"], m["uar"]) for seed, m in stored["best_epoch_per_subject"]["full"]["per_seed"].items()}
    assert table.main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert ("Recomputed from the folder's per-epoch predictions (epoch_predictions.npz): `ststnet`; re-aggregated "
            "from selection_audit.json alone (per-epoch predictions not kept): 0 of 1 folders.") in printed

    # a stored figure changed by hand no longer agrees with the predictions: refused, naming the file
    stored["best_epoch_per_subject"]["full"]["per_seed"]["0"]["uf1"] += 0.01
    (run / AUDIT_FILE).write_text(json.dumps(stored, indent=2))
    with pytest.raises(SystemExit, match=f"{run / AUDIT_FILE}: not what epoch_predictions.npz beside it "
                                         r"recomputes \(differing: best_epoch_per_subject\)"):
        table.load_models(root)
    # a damaged archive: its own message
    shutil.copy(audited_run / AUDIT_FILE, run / AUDIT_FILE)
    (run / EPOCH_PREDICTIONS_FILE).write_bytes(b"\0" * 100)
    with pytest.raises(SystemExit, match=f"{run / EPOCH_PREDICTIONS_FILE}: not a readable .npz"):
        table.load_models(root)
    # an older folder without the archive is re-aggregated from its selection_audit.json, as before
    (run / EPOCH_PREDICTIONS_FILE).unlink()
    assert table.load_models(root)["ststnet"]["recomputed"] == []
