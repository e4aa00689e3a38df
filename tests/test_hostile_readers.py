"""Hostile inputs to the readers, through `fr-mer scan` as a user runs it.

Each case asserts the exit code, that the message names the file (and row) or
says what was refused, and that no Python traceback is printed.
"""
from __future__ import annotations

import os
import zipfile

import openpyxl
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.pipeline.layouts import ClipSpec, write_casme2, write_composite_list, write_smic
from fr_mer.pipeline.scan import read_scan_table
from tests.conftest import CASME2_CLIPS


def scan(*args):
    result = CliRunner().invoke(main, ["scan", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output, result.exception)
    return result


def casme2_sheet(tmp_path):
    release = tmp_path / "CASME2"
    write_casme2(release, CASME2_CLIPS[:2])
    return release, next(release.rglob("CASME2-coding-*.xlsx"))


def rewrite_member(path, member, change):
    copy = path.with_name("copy.xlsx")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, change(data) if item.filename == member else data)
    os.replace(copy, path)


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],          # truncated sheet XML
    lambda data: b"\x00\xffnot xml<<<",            # garbage instead of XML
    lambda data: data.replace(b"<row", b"<ro w", 2),  # corrupt tags
])
def test_xlsx_with_damaged_sheet_xml(tmp_path, damage):
    release, sheet = casme2_sheet(tmp_path)
    rewrite_member(sheet, "xl/worksheets/sheet1.xml", damage)
    result = scan("--dataset", "casme2", "--root", release, "--annotations", sheet)
    assert result.exit_code == 1
    assert str(sheet) in result.stderr and "cannot be read as an .xlsx file" in result.stderr


def test_csv_cell_over_128_kib(tmp_path):
    release, _ = casme2_sheet(tmp_path)
    export = tmp_path / "export.csv"
    export.write_text("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion\n"
                      f'01,EP02_01f,98,100,103,"{"x" * 200_000}"\n', encoding="utf-8")
    result = scan("--dataset", "casme2", "--root", release, "--annotations", export)
    assert result.exit_code == 1
    assert f"{export}, row 2" in result.stderr and "cannot be read as CSV" in result.stderr


@pytest.mark.parametrize("subject, expected", [
    ("subXX", "'subXX'"), ("sub1/../../x", "'sub1/../../x'"), ("1e25", "'1e25'"),
])
def test_composite_list_subject_not_parseable(tmp_path, subject, expected):
    release, _ = casme2_sheet(tmp_path)
    listed = tmp_path / "list.csv"
    listed.write_text(f"casme2,sub01,EP02_01f,0\r\ncasme2,{subject},EP03_02,1\r\n", encoding="utf-8")
    result = scan("--dataset", "composite", "--casme2-root", release, "--composite-list", listed)
    assert result.exit_code == 1
    assert f"{listed}, row 2" in result.stderr and expected in result.stderr


def test_composite_list_not_utf8(tmp_path):
    release, _ = casme2_sheet(tmp_path)
    listed = tmp_path / "list.csv"
    listed.write_bytes("casme2,sub01,EP02_01f,0\r\nsmic,s01,s01_n\xe9_01,0\r\n".encode("latin-1"))
    result = scan("--dataset", "composite", "--casme2-root", release, "--composite-list", listed)
    assert result.exit_code == 1
    assert str(listed) in result.stderr and "UTF-8" in result.stderr


def test_composite_list_cell_over_128_kib(tmp_path):
    release, _ = casme2_sheet(tmp_path)
    listed = tmp_path / "list.csv"
    listed.write_text(f'casme2,sub01,"{"y" * 200_000}",0\r\n', encoding="utf-8")
    result = scan("--dataset", "composite", "--casme2-root", release, "--composite-list", listed)
    assert result.exit_code == 1
    assert f"{listed}, row 1" in result.stderr


@pytest.mark.parametrize("cell", ["1/../../../etc", "1e25", 1e25, "subXX", "1.5"])
def test_subject_cells_that_name_no_subject(tmp_path, cell):
    root = tmp_path / "c"
    row = {"Subject": cell, "Filename": "EP02_01f", "OnsetFrame": 98, "ApexFrame": 100,
           "OffsetFrame": 103, "Estimated Emotion": "disgust"}
    write_casme2(root, CASME2_CLIPS[:1], extra_rows=[row])
    table = tmp_path / "t.csv"
    result = scan("--dataset", "casme2", "--root", root, "--out", table)
    assert result.exit_code == 0
    rows = read_scan_table(table)
    assert rows[0]["status"] == "ok" and rows[0]["subject"] == "sub01"
    assert rows[1]["status"] == "unusable" and rows[1]["subject"] != "sub01"
    assert "is not a subject number" in rows[1]["problem"]
    assert "row 3" in result.stdout and "[unusable]" in result.stdout


def test_symlinked_frame_leading_outside_the_root(tmp_path):
    outside = tmp_path / "outside.jpg"
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:1])
    frame = next(root.rglob("img99.jpg"))
    os.replace(frame, outside)
    frame.symlink_to(outside)
    table = tmp_path / "t.csv"
    result = scan("--dataset", "casme2", "--root", root, "--out", table)
    assert result.exit_code == 0
    (row,) = read_scan_table(table)
    assert row["status"] == "unusable"
    assert str(frame) in row["problem"] and "outside the dataset root" in row["problem"]
    assert "img99.jpg" in result.stdout


def test_symlinked_frame_inside_the_root_is_followed(tmp_path):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:1])
    frame = next(root.rglob("img99.jpg"))
    kept = frame.with_name("kept.bin")
    os.replace(frame, kept)
    frame.symlink_to(kept)
    table = tmp_path / "t.csv"
    assert scan("--dataset", "casme2", "--root", root, "--out", table).exit_code == 0
    assert read_scan_table(table)[0]["status"] == "ok"


@pytest.mark.parametrize("level", ["clip", "emotion", "subject"])
def test_smic_folder_linked_outside_the_root(tmp_path, level):
    root = tmp_path / "smic"
    write_smic(root, [ClipSpec("s01", "s1_ne_01", "negative", 1, None, 4),
                      ClipSpec("s02", "s2_po_01", "positive", 1, None, 4)])
    clip = next(p for p in root.rglob("s1_ne_01") if "HS" in p.parts)  # not the NIR/VIS copies
    target = {"clip": clip, "emotion": clip.parent, "subject": clip.parent.parent.parent}[level]
    moved = tmp_path / "elsewhere" / target.name
    moved.parent.mkdir()
    os.replace(target, moved)
    target.symlink_to(moved, target_is_directory=True)
    table = tmp_path / "t.csv"
    result = scan("--dataset", "smic", "--root", root, "--out", table)
    assert result.exit_code == 0
    rows = {r["clip"]: r for r in read_scan_table(table)}
    assert rows["s02_po_01"]["status"] == "ok"
    assert rows["s01_ne_01"]["status"] == "unusable"
    assert "outside the dataset root" in rows["s01_ne_01"]["problem"]


def test_casme2_subject_folder_linked_outside_the_root(tmp_path):
    root = tmp_path / "c"
    write_casme2(root, CASME2_CLIPS[:2])
    subject = next(root.rglob("sub04"))
    moved = tmp_path / "elsewhere" / "sub04"
    moved.parent.mkdir()
    os.replace(subject, moved)
    subject.symlink_to(moved, target_is_directory=True)
    table = tmp_path / "t.csv"
    assert scan("--dataset", "casme2", "--root", root, "--out", table).exit_code == 0
    rows = {r["subject"]: r for r in read_scan_table(table)}
    assert rows["sub01"]["status"] == "ok"
    assert rows["sub04"]["status"] == "unusable" and "leaves the dataset root" in rows["sub04"]["problem"]


def test_objective_sheet_with_a_bad_cell_names_file_and_row(tmp_path):
    release, _ = casme2_sheet(tmp_path)
    sheet = tmp_path / "CASME2-ObjectiveClasses.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Subject", "Filename", "Objective Class"])
    book.active.append(["01", "EP02_01f", 2])
    book.active.append(["04", "EP12_01f", "nine"])
    book.save(sheet)
    result = scan("--dataset", "casme2", "--root", release, "--casme2-objective", sheet)
    assert result.exit_code == 1
    assert f"{sheet}, sheet Sheet, row 3" in result.stderr and "'nine'" in result.stderr


def test_composite_list_of_a_database_not_in_the_composite(tmp_path):
    release, _ = casme2_sheet(tmp_path)
    listed = write_composite_list(tmp_path / "l.csv", [("casme2", "sub01", "EP02_01f", 0)])
    with open(listed, "a", encoding="utf-8") as handle:
        handle.write("casme3,spNO.1,j,0\r\n")
    result = scan("--dataset", "composite", "--casme2-root", release, "--composite-list", listed)
    assert result.exit_code == 1 and f"{listed}, row 2" in result.stderr
