"""CAS(ME)^3 part A on a copy of its real layout and header (invented pixels), reader and scan."""
from __future__ import annotations

import csv
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.pipeline.clips import OK, REPAIRED, UNUSABLE
from fr_mer.pipeline.labels import canonical_subject, composite_class
from fr_mer.pipeline.layouts import write_frames
from fr_mer.pipeline.readers import read_database, unannotated_clip_folders
from fr_mer.pipeline.scan import read_scan_table

#: The release's annotation file name and header row (row 1), as in ../shared/specs/datasets.md.
CASME3_SHEET = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
CASME3_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion")

#: Rows as written: (Subject, Filename, Onset, Apex, Offset, AU, Objective class, emotion).
#: spNO.1/j holds two samples (onsets 28 and 95); the quirks of public loaders: apex
#: outside the interval (an onset after the apex), offset before onset.
ROWS = (
    ("spNO.1", "j", 28, 30, 33, "4", "II", "disgust"),
    ("spNO.1", "j", 95, 98, 100, "R14", "III", "happy"),
    ("spNO.1", "b", 175, 176, 178, "L2+L1", "I", "surprise"),
    ("spNO.2", "a", 10, 8, 14, "26+25", "V", "sad"),  # apex before onset
    ("spNO.2", "c", 50, 52, 46, "4", "VI", "anger"),  # offset before onset
    ("spNO.10", "m", 5, 6, 9, "12", "VII", "others"),
)

#: Frames written per (subject, task): absolute numbers, unpadded (``175.jpg``).
FRAMES = {
    ("spNO.1", "j"): list(range(25, 36)) + list(range(94, 102)),
    ("spNO.1", "b"): list(range(170, 181)),
    ("spNO.2", "a"): list(range(5, 16)),
    ("spNO.2", "c"): list(range(44, 54)),
    ("spNO.10", "m"): list(range(1, 12)),
    ("spNO.10", "k"): list(range(1, 4)),  # a task video no row names
}


def write_casme3(root: Path, rows=ROWS, *, annotation: str = "xlsx") -> Path:
    """``root/part_A/spNO.N/<task>/{color,depth}/<n>.jpg`` and the annotation file beside
    ``part_A``; returns the annotation file."""
    part = root / "part_A"
    for (subject, task), numbers in FRAMES.items():
        write_frames(part / subject / task / "color", numbers, "{}.jpg")
        write_frames(part / subject / task / "depth", numbers[:2], "{}.png")
    if annotation == "xlsx":
        path = root / CASME3_SHEET
        book = openpyxl.Workbook()
        book.active.append(CASME3_HEADER)
        for row in rows:
            book.active.append(list(row))
        book.save(path)
    else:
        path = root / CASME3_SHEET.replace(".xlsx", ".csv")
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CASME3_HEADER)
            writer.writerows(rows)
    return path


def by_key(clips):
    return {c.key: c for c in clips}


@pytest.mark.parametrize("annotation", ["xlsx", "csv"])
def test_reader_several_samples_per_task_and_repairs(tmp_path, annotation):
    sheet = write_casme3(tmp_path, annotation=annotation)
    clips = read_database("casme3", tmp_path)  # annotation file found beside part_A
    assert [c.row for c in clips] == list(range(2, 2 + len(ROWS)))
    assert {c.source for c in clips} == {str(sheet)}
    got = by_key(clips)
    first, second = got["casme3/spNO.1/j/28"], got["casme3/spNO.1/j/95"]
    assert (first.onset_frame, first.apex_frame, first.offset_frame) == (28, 30, 33)
    assert list(first.frames) == list(range(28, 34))
    assert (second.onset_frame, second.apex_frame, second.offset_frame) == (95, 98, 100)
    assert first.status == second.status == OK
    assert first.onset_path.parent.name == "color" and first.onset_path.name == "28.jpg"
    assert (first.emotion, first.label, first.objective_class) == ("disgust", "negative", 2)
    b = got["casme3/spNO.1/b/175"]
    assert [p.name for p in b.frame_paths()][:2] == ["175.jpg", "176.jpg"]  # by number
    assert (b.label, b.objective_class) == ("surprise", 1)
    before = got["casme3/spNO.2/a/10"]  # apex 8 < onset 10: middle frame of 10..14
    assert (before.status, before.apex_frame, before.apex_rule) == (REPAIRED, 12, "middle")
    assert "apex 8 outside onset..offset 10..14" in before.problem
    reversed_ = got["casme3/spNO.2/c/50"]
    assert reversed_.status == UNUSABLE and "offset 46 is not after onset 50" in reversed_.problem
    others = got["casme3/spNO.10/m/5"]
    assert (others.status, others.label, others.objective_class) == (OK, None, 7)
    assert all(p.suffix == ".jpg" for c in clips for p in c.frames.values())  # depth ignored


def test_subject_ids_and_classes():
    assert canonical_subject("casme3", "spNO.7") == canonical_subject("casme3", 7) == "spNO.7"
    assert [composite_class("casme3", e) for e in ("fear", "happy", "surprise", "others")] == [
        "negative", "positive", "surprise", None]


def test_same_onset_twice_is_a_duplicate_and_unannotated_tasks_listed(tmp_path):
    write_casme3(tmp_path, rows=ROWS[:1] + ROWS[:1])
    clips = read_database("casme3", tmp_path)
    assert clips[1].status == UNUSABLE and "duplicate of row 2" in clips[1].problem
    folders = unannotated_clip_folders("casme3", tmp_path, clips)
    assert "spNO.1/j" not in folders and "spNO.10/k" in folders and "spNO.1/b" in folders


def test_task_without_color_folder_is_unusable(tmp_path):
    write_casme3(tmp_path)
    for path in (tmp_path / "part_A" / "spNO.1" / "b" / "color").iterdir():
        path.unlink()
    (tmp_path / "part_A" / "spNO.1" / "b" / "color").rmdir()
    clip = by_key(read_database("casme3", tmp_path))["casme3/spNO.1/b/175"]
    assert clip.status == UNUSABLE and "holds no color folder" in clip.problem


def test_scan_command_reads_casme3(tmp_path):
    sheet = write_casme3(tmp_path)
    table = tmp_path / "scan.csv"
    result = CliRunner().invoke(main, ["scan", "--dataset", "casme3", "--casme3-root", str(tmp_path / "part_A"),
                                       "--casme3-annotations", str(sheet), "--out", str(table)])
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert [r["clip"] for r in rows] == ["j/28", "j/95", "b/175", "a/10", "c/50", "m/5"]
    assert [r["objective_class"] for r in rows] == ["2", "3", "1", "5", "6", "7"]
    assert "6 clips: 4 ok, 1 repaired, 1 unusable" in result.stdout
    assert "CAS(ME)^3: frames in" in result.stdout
    assert "usable by objective class (CAS(ME)^3, 5 known): 1 1, 2 1, 3 1, 4 0, 5 1, 6 0, 7 1" in result.stdout
    counts = next(line for line in result.stdout.splitlines() if line.startswith("casme3 "))
    assert counts.split()[1:] == ["3", "1", "1", "1", "4", "1", "1", "6"]
    assert "spNO.10/k" in result.stdout  # the task video without a row


@pytest.mark.parametrize("args", [
    ["--dataset", "casme2", "--root", ".", "--casme3-root", "."],
    ["--dataset", "casme3", "--root", ".", "--casme3-root", "."],
    ["--dataset", "composite", "--root", ".", "--casme3-annotations", "x.xlsx"],
    ["--dataset", "samm", "--root", ".", "--casme2-objective", "x.xlsx"],
])
def test_casme3_option_combinations_are_usage_errors(args):
    result = CliRunner().invoke(main, ["scan", *args])
    assert result.exit_code == 2, result.output
