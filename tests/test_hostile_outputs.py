"""Outputs never destroy inputs (issue 27, item 1).

The planted check: for every command that writes, an output path equal to each of
its inputs (and one inside each input folder) is refused before any work, exit 1,
the message naming both paths, no traceback, and the input byte for byte as it
was. Then ``--overwrite`` replaces only what fr-mer made: a cache, a checkpoint, a
results folder, a synth folder, never the user's other files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.cachefactory import small_composite
from tests.test_preprocess import write_face_smic
from tests.cli import run


def fingerprint(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with the sha256 of its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    """One existing path per kind of input, each holding bytes of its own (the check comes before any read)."""
    made = {}
    for name in FOLDER_INPUTS:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "inside.txt").write_text(f"{name}'s own file\n")
        made[name] = folder
    for run_folder in ("run_a", "run_b", "run_c", "run_d"):
        (made[run_folder] / "predictions.csv").write_text("seed,database,subject,key,label,pred\n")
        (made[run_folder] / "config.json").write_text("{}\n")
    for name, suffix in (("annotations", ".xlsx"), ("composite_list", ".csv"), ("objective", ".xlsx"),
                         ("landmarks", ".dat"), ("cache", ".h5"), ("select", ".json"), ("labels", ".csv")):
        made[name] = tmp_path / f"{name}{suffix}"
        made[name].write_bytes(f"{name}: bytes a user would miss\n".encode())
    return made


def _scan_like(command: str, i: dict[str, Path]) -> list[tuple[list, str, str]]:
    """(arguments, input option, input key) for scan or preprocess, every input of its dataset options."""
    single = [command, "--dataset", "casme2", "--root", i["root"], "--annotations", i["annotations"],
              "--casme2-objective", i["objective"]]
    composite = [command, "--dataset", "composite", "--casme2-root", i["casme2_root"], "--samm-root", i["samm_root"],
                 "--smic-root", i["smic_root"], "--composite-list", i["composite_list"]]
    cases = [(single, "--root", "root"), (single, "--annotations", "annotations"),
             (single, "--casme2-objective", "objective"), (composite, "--casme2-root", "casme2_root"),
             (composite, "--samm-root", "samm_root"), (composite, "--smic-root", "smic_root"),
             (composite, "--composite-list", "composite_list")]
    if command == "preprocess":
        cases.append((single + ["--landmarks-model", i["landmarks"]], "--landmarks-model", "landmarks"))
    return cases


def _cases(i: dict[str, Path]) -> list[tuple[list, str, str, str]]:
    """(arguments without the output, output option, input option, input key), every command and input."""
    cases = []
    for command in ("scan", "preprocess"):
        cases += [(args, "--out", option, key) for args, option, key in _scan_like(command, i)]
    model = ["--model", "ststnet", "--epochs", "1"]
    train = ["train", "--cache", i["cache"], "--composite-list", i["composite_list"], *model]
    cases += [(train, "--out", "--cache", "cache"), (train, "--out", "--composite-list", "composite_list")]
    evaluate = ["evaluate", "--cache", i["cache"], "--composite-list", i["composite_list"], "--weights", i["weights"],
                "--select", i["select"], *model]
    cases += [(evaluate, "--out", option, key) for option, key in
              (("--cache", "cache"), ("--composite-list", "composite_list"), ("--weights", "weights"),
               ("--select", "select"))]
    probe = ["probe", "--cache", i["cache"], "--composite-list", i["composite_list"]]
    cases += [(probe, "--out", "--cache", "cache"), (probe, "--out", "--composite-list", "composite_list")]
    ststnet = ["import-ststnet", "--images", i["images"], "--labels", i["labels"], "--apex-faces", i["apex_faces"],
               "--landmarks-model", i["landmarks"]]
    cases += [(ststnet, "--out", option, key) for option, key in
              (("--images", "images"), ("--labels", "labels"), ("--apex-faces", "apex_faces"),
               ("--landmarks-model", "landmarks"))]
    cases.append((["synth", "--faces", i["faces"]], "--out", "--faces", "faces"))
    compare = ["compare", i["run_a"], i["run_b"], "--also-a", i["run_c"], "--also-b", i["run_d"]]
    for output in ("--json", "--markdown"):
        cases += [(compare, output, option, key) for option, key in
                  (("RUN_A", "run_a"), ("RUN_B", "run_b"), ("--also-a", "run_c"), ("--also-b", "run_d"))]
    return cases


FOLDER_INPUTS = ("root", "casme2_root", "samm_root", "smic_root", "images", "apex_faces", "faces", "weights", "run_a",
                 "run_b", "run_c", "run_d")
FILE_INPUTS = ("annotations", "composite_list", "objective", "landmarks", "cache", "select", "labels")
#: Every (command, output option, input option) the planted check covers, as (index into _cases, where);
#: an output inside an input is tried for the folder inputs.
_PLAN = _cases({key: Path(key) for key in FOLDER_INPUTS + FILE_INPUTS})
CASES = [(index, where) for index, (_, _, _, key) in enumerate(_PLAN)
         for where in (("equal", "inside") if key in FOLDER_INPUTS else ("equal",))]
CASE_IDS = [f"{_PLAN[index][0][0]} {_PLAN[index][1]}={_PLAN[index][2]} {where}" for index, where in CASES]


@pytest.mark.parametrize("index, where", CASES, ids=CASE_IDS)
def test_an_output_equal_to_or_inside_an_input_is_refused(inputs, index, where):
    args, output_option, input_option, key = _cases(inputs)[index]
    source = inputs[key]
    target = source if where == "equal" else source / "new-output"
    before = {name: fingerprint(path) for name, path in inputs.items()}
    extra = ["--overwrite"] if args[0] in ("preprocess", "import-ststnet", "synth", "evaluate") else []
    result = run(*args, output_option, target, *extra)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "this is a bug" not in result.output, result.output
    for name in (output_option, input_option, str(source), str(target)):
        assert name in result.output, (name, result.output)
    assert {name: fingerprint(path) for name, path in inputs.items()} == before


def test_every_writing_command_is_covered():
    """A command that gains an output or an input must join the planted check."""
    covered = {case.split()[0] for case in CASE_IDS}
    assert covered == {"scan", "preprocess", "train", "evaluate", "probe", "import-ststnet", "synth", "compare"}


def test_the_same_file_by_a_link_is_refused(tmp_path):
    sheet = tmp_path / "sheet.xlsx"
    sheet.write_bytes(b"the coding sheet")
    (tmp_path / "release").mkdir()
    link = tmp_path / "table.csv"
    link.symlink_to(sheet)
    result = run("scan", "--dataset", "casme2", "--root", tmp_path / "release", "--annotations", sheet, "--out", link)
    assert result.exit_code == 1 and "--annotations" in result.output, result.output
    assert sheet.read_bytes() == b"the coding sheet"


# -- --overwrite replaces only what fr-mer made -------------------------------------------------
def test_preprocess_overwrite_leaves_a_file_that_is_not_a_cache(tmp_path):
    release = tmp_path / "smic"
    write_face_smic(release, 1)
    photo = tmp_path / "apex.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a JPEG")
    result = run("preprocess", "--dataset", "smic", "--root", release, "--out", photo, "--overwrite")
    assert result.exit_code == 1 and str(photo) in result.output and "not an HDF5 cache" in result.output, result.output
    assert photo.read_bytes() == b"\xff\xd8\xff\xe0 a JPEG"


def test_preprocess_overwrite_leaves_another_programs_hdf5_file_and_replaces_a_damaged_cache(tmp_path):
    import h5py

    release = tmp_path / "smic"
    write_face_smic(release, 1)
    theirs = tmp_path / "theirs.h5"
    with h5py.File(theirs, "w") as f:
        f["data"] = [1, 2, 3]
    before = fingerprint(theirs)
    args = ["preprocess", "--dataset", "smic", "--root", release, "--flow-size", 64, "--head-motion", "none",
            "--jobs", 1, "--overwrite", "--out"]
    result = run(*args, theirs)
    assert result.exit_code == 1 and "not an fr-mer cache" in result.output, result.output
    assert fingerprint(theirs) == before
    cache = tmp_path / "c.h5"
    assert run(*args, cache).exit_code == 0
    cache.write_bytes(cache.read_bytes()[:2000])  # cut short: damaged, still replaced
    assert run(*args, cache).exit_code == 0, "a damaged cache is what --overwrite replaces"


def test_train_refuses_an_existing_out_and_overwrites_only_a_checkpoint(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    args = ["train", "--cache", cache, "--composite-list", listing, "--model", "ststnet", "--epochs", "1",
            "--batch-size", "16", "--threads", "1", "--out"]
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    refused = run(*args, notes)
    assert refused.exit_code == 1 and "--overwrite" in refused.output and str(notes) in refused.output
    refused = run(*args, notes, "--overwrite")
    assert refused.exit_code == 1 and "not an fr-mer checkpoint" in refused.output, refused.output
    assert notes.read_text() == "my notes"
    model = tmp_path / "model.pt"
    assert run(*args, model).exit_code == 0
    again = run(*args, model)
    assert again.exit_code == 1 and "exists" in again.output
    assert run(*args, model, "--overwrite").exit_code == 0


@pytest.mark.parametrize("command", ["evaluate", "probe"])
def test_results_go_only_into_an_empty_or_fr_mer_results_folder(tmp_path, command):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "predictions.csv").write_text("my own predictions\n")
    cache = tmp_path / "c.h5"
    cache.write_bytes(b"x")
    extra = ["--model", "ststnet", "--overwrite"] if command == "evaluate" else []
    result = run(command, "--cache", cache, *extra, "--out", folder)
    assert result.exit_code == 1 and "config.json" in result.output and str(folder) in result.output, result.output
    assert (folder / "predictions.csv").read_text() == "my own predictions\n"


def test_synth_overwrite_never_deletes_what_synth_did_not_write(tmp_path):
    out = tmp_path / "synth"
    args = ["synth", "--layout", "smic", "--subjects", "1", "--clips-per-subject", "3", "--size", "160x120",
            "--out", out]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert str(out / "cache.h5") not in first.output  # the suggested cache lies beside the release, not in it
    manifest = json.loads((out / "synth-manifest.json").read_text())
    assert manifest["written"] and "synth-manifest.json" not in manifest["written"]
    (out / "notes.txt").write_text("my notes")
    (out / "results").mkdir()
    (out / "cache.h5").write_bytes(b"a cache made here")
    result = run(*args, "--overwrite")
    assert result.exit_code == 1, result.output
    for name in ("notes.txt", "results", "cache.h5", "--overwrite"):
        assert name in result.output
    assert (out / "notes.txt").read_text() == "my notes" and (out / "cache.h5").read_bytes() == b"a cache made here"
    for name in ("notes.txt", "cache.h5"):
        (out / name).unlink()
    (out / "results").rmdir()
    assert run(*args, "--overwrite").exit_code == 0
