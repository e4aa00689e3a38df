"""Readers of CASME II, SAMM, SMIC-HS and the composite list on copies of the real layouts."""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import openpyxl
import pytest

from tests.conftest import CASME2_CLIPS, SAMM_CLIPS, make_casme2, make_samm
from fr_mer.pipeline.clips import OK, REPAIRED, UNUSABLE
from fr_mer.pipeline.composite import OFFICIAL_SHA256, file_sha256, read_composite_list
from fr_mer.pipeline.labels import CLASS_INDEX
from fr_mer.pipeline.layouts import (
    CASME2_HEADER,
    SAMM_HEADER,
    ClipSpec,
    write_casme2,
    write_composite_list,
    write_frames,
    write_smic,
)
from fr_mer.pipeline.readers import (
    DatasetError,
    DatasetNotFoundError,
    read_database,
    resolve_composite,
    unannotated_clip_folders,
)
from fr_mer.pipeline.xlsx import SheetError, cell_int, read_table


def by_key(clips):
    return {c.key: c for c in clips}


# --------------------------------------------------------------------------- spreadsheets


def test_layout_writes_the_real_headers(casme2_release, samm_release):
    ws = openpyxl.load_workbook(casme2_release.annotations)["Sheet1"]
    assert tuple(c.value for c in ws[1]) == CASME2_HEADER
    assert ws["A2"].value == "01" and ws["A2"].data_type == "s"  # Subject stored as text
    book = openpyxl.load_workbook(samm_release.annotations)
    assert book.sheetnames == ["MICRO_ONLY"]
    ws = book["MICRO_ONLY"]
    assert tuple(c.value for c in ws[14]) == SAMM_HEADER
    assert ws["A15"].value == "006"
    assert str(ws["G15"].value).startswith("=")  # Duration is a formula


def test_header_found_below_note_rows_and_row_numbers_kept(samm_release):
    columns = {"subject": ("Subject",), "onset": ("Onset Frame",), "duration": ("Duration",)}
    sheet = read_table(samm_release.annotations, columns, required=("subject", "onset"))
    assert sheet.sheet == "MICRO_ONLY" and sheet.header_row == 14
    assert [r.row for r in sheet.rows] == list(range(15, 15 + len(SAMM_CLIPS)))
    assert sheet.rows[0]["subject"] == "006" and sheet.rows[0]["onset"] == 5562
    assert sheet.rows[3]["subject"] == 7  # the int cell as stored
    assert sheet.rows[0]["duration"] is None  # formula without a cached value


def test_csv_export_with_pandas_names_and_index_column(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        ",Subject,Filename,Unnamed: 2,OnsetFrame,ApexFrame,OffsetFrame,Unnamed: 6,Action Units,"
        "Estimated Emotion\n0,1,EP02_01f,,46,59,86,,4+L10,disgust\n"
        '1,1,EP03_02,,131,139,161,,"R1, R2",happiness\n',
        encoding="utf-8",
    )
    columns = {"subject": ("Subject",), "onset": ("OnsetFrame",), "au": ("Action Units",),
               "emotion": ("Estimated Emotion",)}
    sheet = read_table(path, columns)
    assert sheet.header_row == 1 and [r.row for r in sheet.rows] == [2, 3]
    assert [r["au"] for r in sheet.rows] == ["4+L10", "R1, R2"]
    assert cell_int(sheet.rows[0]["onset"]) == 46


def test_semicolon_csv_with_notes_on_top(tmp_path):
    path = tmp_path / "samm.csv"
    lines = ["Note;;;"] * 3 + [
        "Subject;Filename;Onset Frame;Notes", '006;006_1_2;5562;"two\nlines"', "007;007_7_1;100;",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="cp1252")
    sheet = read_table(path, {"subject": ("Subject",), "onset": ("Onset Frame",)})
    assert sheet.header_row == 4
    assert [(r.row, r["subject"]) for r in sheet.rows] == [(5, "006"), (6, "007")]


def test_wrong_header_names_file_and_missing_columns(tmp_path):
    path = tmp_path / "coding.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Subject", "Filename", "Onset", "Apex", "Offset"])
    book.save(path)
    with pytest.raises(SheetError) as info:
        read_table(path, {"subject": ("Subject",), "onset": ("OnsetFrame",),
                          "apex": ("ApexFrame",)})
    message = str(info.value)
    assert str(path) in message and "OnsetFrame" in message and "row 1" in message


@pytest.mark.parametrize("name, content", [
    ("old.xls", b"\xd0\xcf\x11\xe0"), ("broken.xlsx", b"not a zip"),
])
def test_unreadable_spreadsheet_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SheetError, match=name):
        read_table(path, {"subject": ("Subject",)})


@pytest.mark.parametrize("value, expected", [
    (46, 46), (46.0, 46), (" 46 ", 46), ("46.0", 46), ("/", None), ("", None), (None, None),
    (46.5, None), ("4+L10", None), (True, None),
])
def test_cell_int(value, expected):
    assert cell_int(value) == expected


# --------------------------------------------------------------------------- CASME II


def test_casme2_raw_release(casme2_release):
    clips = read_database("casme2", casme2_release.root)
    # one per row, none dropped; the folders without a row are not clips
    assert len(clips) == len(CASME2_CLIPS)
    assert [c.row for c in clips] == list(range(2, 2 + len(CASME2_CLIPS)))
    clip = by_key(clips)["casme2/sub01/EP02_01f"]
    # by number: img98..img103, although 'img100' < 'img98' as text
    assert list(clip.frames) == [98, 99, 100, 101, 102, 103]
    assert [p.name for p in clip.frame_paths()][:3] == ["img98.jpg", "img99.jpg", "img100.jpg"]
    assert clip.onset_path.name == "img98.jpg" and clip.apex_path.name == "img100.jpg"
    assert (clip.status, clip.problem, clip.apex_rule) == (OK, "", "annotated")
    assert (clip.emotion, clip.label) == ("disgust", "negative")
    assert clip.source == str(casme2_release.annotations)
    for path in clip.frames.values():
        assert path.is_file() and path.is_absolute()


def test_casme2_apex_quirks(casme2_release):
    clips = by_key(read_database("casme2", casme2_release.root))
    slash = clips["casme2/sub04/EP12_01f"]  # ApexFrame '/', frames 10..14
    assert (slash.status, slash.apex_frame, slash.apex_rule) == (REPAIRED, 12, "middle")
    assert "'/'" in slash.problem and "middle frame 12" in slash.problem
    at_onset = clips["casme2/sub05/EP09_05f"]  # apex == onset 20, frames 20..24
    assert (at_onset.status, at_onset.apex_frame, at_onset.apex_rule) == (REPAIRED, 22, "middle")
    assert "equals onset" in at_onset.problem
    at_offset = clips["casme2/sub02/EP01_11f"]  # apex == offset: kept as annotated
    assert (at_offset.status, at_offset.apex_frame, at_offset.apex_rule) == (OK, 33, "annotated")


def test_casme2_subject_int_names_and_labels(casme2_release):
    clips = by_key(read_database("casme2", casme2_release.root))
    assert clips["casme2/sub03/EP01_2"].status == OK  # Subject cell int 3 -> sub03
    assert clips["casme2/sub09/EP09f"].label is None  # others: not in the composite
    assert clips["casme2/sub11/EP06_02_01"].label is None  # CASME II sadness is left out
    assert clips["casme2/sub02/EP01_11f"].label == "positive"
    assert {c.status for c in clips.values()} <= {OK, REPAIRED}


def test_casme2_unannotated_folders(casme2_release):
    clips = read_database("casme2", casme2_release.root)
    assert unannotated_clip_folders("casme2", casme2_release.root, clips) == [
        "sub09/EP02_02f", "sub24/EP02_07",
    ]


def test_casme2_cropped_release_2019_sheet_nested_with_junk(tmp_path):
    release = make_casme2(tmp_path / "c", release="cropped", spreadsheet="20190701", nest=True)
    assert (release.top / "Desktop - Shortcut.lnk").is_file()
    assert release.annotations.name == "CASME2-coding-20190701.xlsx"
    ws = openpyxl.load_workbook(release.annotations)["Sheet1"]
    assert ws["J1"].value == "Objective Classes"
    clips = by_key(read_database("casme2", tmp_path))
    clip = clips["casme2/sub01/EP02_01f"]
    assert clip.onset_path.name == "reg_img98.jpg"
    assert clip.onset_path.parent.parent.parent == release.top.resolve()
    # Thumbs.db and the .lnk are not frames
    assert all(p.suffix == ".jpg" for c in clips.values() for p in c.frames.values())


@pytest.mark.parametrize("level", ["above", "release", "top", "nested-inner"])
def test_casme2_root_at_any_level(tmp_path, level):
    release = make_casme2(tmp_path / "data" / "CASME2", nest=True)
    root = {
        "above": tmp_path,
        "release": release.root,
        "top": release.top.parent,
        "nested-inner": release.top,
    }[level]
    annotations = release.annotations if level == "nested-inner" else None
    clips = read_database("casme2", root, annotations)
    assert len(clips) == len(CASME2_CLIPS) and all(c.usable for c in clips)


def test_casme2_annotation_discovery_prefers_newer_sheet(tmp_path):
    release = make_casme2(tmp_path / "c", clips=CASME2_CLIPS[:1])
    relabelled = [ClipSpec("sub01", "EP02_01f", "happiness", 98, 99, 103)]
    newer = write_casme2(tmp_path / "elsewhere", relabelled, spreadsheet="20190701", junk=False)
    shutil.copy(newer, release.root / newer.name)
    (release.root / "~$CASME2-coding-20990101.xlsx").write_bytes(b"lock file")
    clips = read_database("casme2", release.top)
    used = Path(clips[0].source)
    assert used.name == "CASME2-coding-20190701.xlsx" and used.parent == release.root.resolve()
    assert clips[0].emotion == "happiness"


def test_casme2_macosx_debris_is_not_a_second_release(tmp_path):
    release = make_casme2(tmp_path / "c")
    shutil.copytree(release.top, tmp_path / "c" / "__MACOSX" / "CASME2_RAW_selected")
    assert len(read_database("casme2", tmp_path)) == len(CASME2_CLIPS)


def test_casme2_csv_export_reads_like_the_xlsx(casme2_release, tmp_path):
    ws = openpyxl.load_workbook(casme2_release.annotations)["Sheet1"]
    export = tmp_path / "CASME2-coding-20140508.csv"
    with open(export, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        for row in ws.iter_rows(values_only=True):
            writer.writerow(["" if v is None else v for v in row])
    from_xlsx = [c.as_row() for c in read_database("casme2", casme2_release.root)]
    from_csv = [c.as_row() for c in read_database("casme2", casme2_release.root, export)]
    for row in from_xlsx + from_csv:
        row.pop("source")
    assert from_csv == from_xlsx


def test_casme2_bad_rows_are_reported_never_dropped(tmp_path):
    outside = tmp_path / "outside"
    write_frames(outside, range(1, 4), "img{}.jpg")
    specs = [
        ClipSpec("sub01", "EP01_01", "disgust", 10, 12, 16),  # frames 13, 14 deleted below
        ClipSpec("sub01", "EP01_02", "disgust", 10, 12, 14),  # onset file deleted
        ClipSpec("sub01", "EP01_03", "disgust", 10, 12, 14),  # folder emptied
        ClipSpec("sub01", "EP01_04", "disgust", 10, 12, 14),  # folder removed
        ClipSpec("sub01", "EP01_05", "disgust", 10, 12, 14,
                 cells={"OnsetFrame": 50, "OffsetFrame": 60}),
        ClipSpec("sub01", "EP01_06", "disgust", 10, 12, 14, cells={"OffsetFrame": 9}),
        ClipSpec("sub01", "EP01_07", "disgust", 10, 12, 14, cells={"OnsetFrame": "ten"}),
        ClipSpec("sub01", "EP01_08", "disgust", 10, 12, 14),  # apex file deleted
        ClipSpec("sub01", "EP01_09", "disgust", 10, 12, 14),  # onset file truncated to 0 bytes
        ClipSpec("sub01", "EP01_10", "disgust", 10, 12, 14, cells={"Subject": "abc"}),
        ClipSpec("sub01", "EP01_11", "disgust", 10, 12, 14),  # a second row for it below
    ]

    def row(filename, onset=1, apex=2, offset=3):
        return {"Subject": "01", "Filename": filename, "OnsetFrame": onset, "ApexFrame": apex,
                "OffsetFrame": offset, "Estimated Emotion": "disgust"}

    extra = [row("EP01_11", 10, 12, 14), row("../../outside"), row(str(outside)), row("EP_link"),
             row(None)]
    root = tmp_path / "c"
    write_casme2(root, specs, junk=False, extra_rows=extra)
    sub01 = root / "CASME2_RAW_selected" / "sub01"
    for name in ("img13.jpg", "img14.jpg"):
        (sub01 / "EP01_01" / name).unlink()
    (sub01 / "EP01_02" / "img10.jpg").unlink()
    for path in (sub01 / "EP01_03").iterdir():
        path.unlink()
    shutil.rmtree(sub01 / "EP01_04")
    (sub01 / "EP01_08" / "img12.jpg").unlink()
    (sub01 / "EP01_09" / "img10.jpg").write_bytes(b"")
    os.symlink(outside, sub01 / "EP_link")

    clips = read_database("casme2", root)
    assert len(clips) == len(specs) + len(extra)
    got = {(c.clip, c.row): c for c in clips}
    status = {name: c.status for (name, _), c in got.items()}

    gap = got[("EP01_01", 2)]
    assert gap.status == REPAIRED and "2 of 7 frames missing: 13-14" in gap.problem
    assert list(gap.frames) == [10, 11, 12, 15, 16]
    moved = got[("EP01_02", 3)]
    assert (moved.status, moved.onset_frame) == (REPAIRED, 11)
    assert "onset moved to 11" in moved.problem
    assert status["EP01_03"] == UNUSABLE and "holds no frame images" in got[("EP01_03", 4)].problem
    assert status["EP01_04"] == UNUSABLE and "not found" in got[("EP01_04", 5)].problem
    assert "numbered 50..60" in got[("EP01_05", 6)].problem
    assert "not after onset" in got[("EP01_06", 7)].problem
    assert "'ten' is not a frame number" in got[("EP01_07", 8)].problem
    apex = got[("EP01_08", 9)]
    assert (apex.status, apex.apex_frame, apex.apex_rule) == (REPAIRED, 11, "nearest")
    assert status["EP01_09"] == UNUSABLE and "0 bytes" in got[("EP01_09", 10)].problem
    assert status["EP01_10"] == UNUSABLE and "'abc'" in got[("EP01_10", 11)].problem
    assert got[("EP01_11", 12)].status == OK
    assert got[("EP01_11", 13)].status == UNUSABLE
    assert "duplicate of row 12" in got[("EP01_11", 13)].problem
    assert "not a plain folder name" in got[("../../outside", 14)].problem
    assert got[(str(outside), 15)].status == UNUSABLE
    assert got[("EP_link", 16)].status == UNUSABLE and "refused" in got[("EP_link", 16)].problem
    assert got[("", 17)].status == UNUSABLE and "empty" in got[("", 17)].problem
    for clip in clips:
        if clip.status == UNUSABLE:
            assert clip.problem
            assert all(outside not in p.parents for p in clip.frames.values())


def test_casme2_inputs_that_cannot_be_used(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        read_database("casme2", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no CASME II subject folders"):
        read_database("casme2", tmp_path / "empty")
    release = make_casme2(tmp_path / "c", clips=CASME2_CLIPS[:1])
    release.annotations.unlink()
    with pytest.raises(DatasetError, match="--annotations"):
        read_database("casme2", release.root)
    wrong = tmp_path / "CASME2-coding-wrong.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Subject", "Filename", "Onset", "Apex"])
    book.save(wrong)
    with pytest.raises(DatasetError) as info:
        read_database("casme2", release.root, wrong)
    assert str(wrong) in str(info.value) and "OnsetFrame" in str(info.value)
    header_only = tmp_path / "CASME2-coding-empty.xlsx"
    book = openpyxl.Workbook()
    book.active.append(list(CASME2_HEADER))
    book.save(header_only)
    with pytest.raises(DatasetError, match="no clip rows"):
        read_database("casme2", release.root, header_only)


def test_two_releases_under_one_root_is_ambiguous(tmp_path):
    make_casme2(tmp_path / "a", clips=CASME2_CLIPS[:1])
    make_casme2(tmp_path / "b", clips=CASME2_CLIPS[:1], release="cropped")
    with pytest.raises(DatasetError, match="more than one place") as info:
        read_database("casme2", tmp_path)
    assert "CASME2_RAW_selected" in str(info.value) and "Cropped" in str(info.value)


# --------------------------------------------------------------------------- SAMM


def test_samm_release(samm_release):
    clips = read_database("samm", samm_release.root)
    assert [c.row for c in clips] == list(range(15, 15 + len(SAMM_CLIPS)))
    clips = by_key(clips)
    clip = clips["samm/006/006_1_2"]
    assert clip.onset_path.name == "006_05562.jpg" and clip.apex_path.name == "006_05564.jpg"
    assert list(clip.frames) == list(range(5562, 5567))
    assert (clip.status, clip.emotion, clip.label) == (OK, "Anger", "negative")
    assert clips["samm/007/007_7_1"].status == OK  # Subject cell int 7 -> 007
    assert clips["samm/007/007_7_1"].label == "positive"
    assert clips["samm/011/011_2_3"].label is None  # Other


def test_samm_apex_outside_both_ways(samm_release):
    clips = by_key(read_database("samm", samm_release.root))
    after = clips["samm/028/028_4_1"]  # apex 1143 > offset 1134, frames 1130..1134
    assert (after.status, after.apex_frame, after.apex_rule) == (REPAIRED, 1132, "middle")
    assert "apex 1143 outside onset..offset 1130..1134" in after.problem
    before = clips["samm/032/032_3_1"]  # apex 1930 < onset 4896
    assert (before.status, before.apex_frame) == (REPAIRED, 4898)
    assert "apex 1930 outside" in before.problem


def test_samm_nested_and_root_levels(tmp_path):
    release = make_samm(tmp_path / "d", nest=True)
    for root in (tmp_path, release.top, release.top.parent):
        clips = read_database("samm", root, release.annotations)
        assert len(clips) == len(SAMM_CLIPS) and all(c.usable for c in clips)


def test_samm_wrong_sheet_header(tmp_path):
    release = make_samm(tmp_path / "d", clips=SAMM_CLIPS[:1])
    book = openpyxl.load_workbook(release.annotations)
    book["MICRO_ONLY"]["D14"] = "Start"
    book.save(release.annotations)
    with pytest.raises(DatasetError) as info:
        read_database("samm", release.root)
    assert str(release.annotations) in str(info.value) and "Onset Frame" in str(info.value)


# --------------------------------------------------------------------------- SMIC-HS


def test_smic_raw_release_ignores_nir_vis_and_non_micro(smic_release):
    clips = read_database("smic", smic_release.root)
    assert [c.key for c in clips] == [
        "smic/s01/s01_ne_01", "smic/s01/s01_po_01", "smic/s02/s02_sur_01", "smic/s10/s10_ne_03",
    ]
    for clip in clips:
        assert "HS" in clip.onset_path.parts and "micro" in clip.onset_path.parts
        assert clip.status == OK and clip.apex_rule == "middle"
    first = clips[0]
    assert (first.onset_frame, first.apex_frame, first.offset_frame) == (170921, 170923, 170924)
    assert first.onset_path.name == "image170921.bmp"
    assert first.onset_path.parent.name == "s1_ne_01"  # unpadded on disk, canonical id
    assert [c.label for c in clips] == ["negative", "positive", "surprise", "negative"]
    assert clips[2].apex_frame == 100000  # 99998..100002: middle by number


@pytest.mark.parametrize("level", ["above", "release", "hs"])
def test_smic_root_levels(smic_release, level):
    root = {"above": smic_release.root.parent, "release": smic_release.top,
            "hs": smic_release.top / "HS"}[level]
    assert len(read_database("smic", root)) == len(smic_release.clips)


@pytest.mark.parametrize("pattern", ["reg_image{:06d}.bmp", "reg_{:05d}.bmp", "reg_image{}.bmp"])
def test_smic_cropped_name_variants(tmp_path, pattern):
    specs = [ClipSpec("s03", "s3_po_02", "positive", 1, None, 4),
             ClipSpec("s03", "s3_sur_01", "surprise", 98, None, 101)]
    write_smic(tmp_path, specs, release="cropped", cropped_pattern=pattern)
    clips = read_database("smic", tmp_path)
    assert [c.clip for c in clips] == ["s03_po_02", "s03_sur_01"]
    assert list(clips[1].frames) == [98, 99, 100, 101]
    assert clips[1].onset_path.name == pattern.format(98)
    assert clips[0].apex_frame == 3  # four frames: the later middle


def test_smic_spot_rule(smic_release):
    clips = read_database("smic", smic_release.root, smic_apex="spot")
    assert all(c.apex_frame is None and c.apex_rule == "spot" and c.status == OK for c in clips)
    assert all(c.as_row()["apex_path"] == "" for c in clips)
    with pytest.raises(ValueError, match="smic_apex"):
        read_database("smic", smic_release.root, smic_apex="largest")


def test_smic_bad_clips(tmp_path):
    specs = [ClipSpec("s04", "s4_ne_01", "positive", 1, None, 3),  # code says negative
             ClipSpec("s04", "s4_clip_02", "surprise", 1, None, 3),  # no code: folder decides
             ClipSpec("s04", "s4_po_03", "positive", 1, None, 3)]
    write_smic(tmp_path, specs)
    hs = tmp_path / "SMIC_all_raw" / "HS" / "s4" / "micro"
    (hs / "positive" / "s4_po_04").mkdir()  # empty folder
    (hs / "positive" / "s4_po_03" / "image000002.bmp").unlink()
    clips = by_key(read_database("smic", tmp_path))
    coded = clips["smic/s04/s04_ne_01"]
    assert (coded.status, coded.label) == (REPAIRED, "negative")
    assert "folder positive" in coded.problem
    assert clips["smic/s04/s04_clip_02"].label == "surprise"
    assert clips["smic/s04/s04_clip_02"].status == REPAIRED
    gap = clips["smic/s04/s04_po_03"]
    assert gap.status == REPAIRED and list(gap.frames) == [1, 3] and gap.apex_frame == 3
    assert clips["smic/s04/s04_po_04"].status == UNUSABLE


def test_smic_takes_no_annotations(smic_release, tmp_path):
    with pytest.raises(DatasetError, match="SMIC-HS has no annotation file"):
        read_database("smic", smic_release.root, tmp_path / "x.xlsx")


def test_smic_without_hs_tree_is_not_read_from_nir(tmp_path):
    write_smic(tmp_path, [ClipSpec("s01", "s1_ne_01", "negative", 1, None, 3)])
    shutil.rmtree(tmp_path / "SMIC_all_raw" / "HS")
    with pytest.raises(DatasetNotFoundError):
        read_database("smic", tmp_path)


# --------------------------------------------------------------------------- composite


def test_write_composite_list_reproduces_the_official_file(tmp_path):
    entries = read_composite_list()
    rows = [(e.dataset, e.subject, e.clip, CLASS_INDEX[e.label]) for e in entries]
    path = write_composite_list(tmp_path / "list.csv", rows)
    assert file_sha256(path) == OFFICIAL_SHA256


def test_write_composite_list_format(tmp_path):
    rows = [("samm", "006", "006_1_2", 0), ("smic", "s1", "s1_po_01", 1),
            ("casme2", "sub01", "EP02_01f", 2)]
    path = write_composite_list(tmp_path / "l.csv", rows)
    assert path.read_bytes() == (b"samm,6,006_1_2,0\r\nsmic,s01,s01_po_01,1\r\n"
                                 b"casme2,sub01,EP02_01f,2\r\n")


def test_resolve_composite_all_three_id_formats(composite_release):
    folder, listed, releases = composite_release
    entries = read_composite_list(listed)
    roots = {db: r.root for db, r in releases.items()}
    clips = resolve_composite(entries, roots, {}, source=str(listed))
    assert [c.key for c in clips] == [e.key for e in entries]  # list order, one per row
    got = by_key(clips)
    samm = got["samm/006/006_1_2"]  # list subject '6' -> folder 006
    assert samm.status == OK and samm.onset_path.name == "006_05562.jpg" and samm.emotion == "Anger"
    smic = got["smic/s01/s01_ne_01"]  # list 's01'/'s01_ne_01' -> disk s1/s1_ne_01
    assert smic.status == OK and smic.onset_path.parent.name == "s1_ne_01"
    casme = got["casme2/sub03/EP01_2"]
    assert (casme.status, casme.emotion, casme.label) == (OK, "surprise", "surprise")
    assert got["casme2/sub05/EP09_05f"].status == REPAIRED
    assert got["samm/028/028_4_1"].status == REPAIRED
    for key, where in (("casme2/sub26/EP99_01", "CASME2-coding"),
                       ("samm/036/036_7_4", "SAMM_Micro"),
                       ("smic/s20/s20_po_09", "no clip folder")):
        assert got[key].status == UNUSABLE and where in got[key].problem
        assert got[key].source == str(listed) and got[key].row is not None
    assert [c.label for c in clips] == [e.label for e in entries]


def test_resolve_composite_label_from_list_emotion_from_sheet(tmp_path):
    release = make_casme2(tmp_path / "c", clips=CASME2_CLIPS[:1])
    listed = write_composite_list(tmp_path / "l.csv", [("casme2", "sub01", "EP02_01f", 1)])
    (clip,) = resolve_composite(read_composite_list(listed), {"casme2": release.root}, {})
    assert (clip.label, clip.emotion, clip.status) == ("positive", "disgust", OK)
    assert "the list's label positive" in clip.problem


def test_resolve_composite_missing_roots(composite_release, tmp_path):
    _, listed, releases = composite_release
    entries = read_composite_list(listed)
    clips = resolve_composite(entries, {"casme2": releases["casme2"].root}, {})
    samm = [c for c in clips if c.dataset == "samm"]
    assert samm and all(c.status == UNUSABLE and "--samm-root" in c.problem for c in samm)
    empty = tmp_path / "nothing"
    empty.mkdir()
    roots = {"casme2": releases["casme2"].root, "samm": empty, "smic": empty}
    with pytest.raises(DatasetNotFoundError):
        resolve_composite(entries, roots, {})
    clips = resolve_composite(entries, roots, {}, absent_ok=("samm", "smic"))
    assert all(c.status == UNUSABLE for c in clips if c.dataset != "casme2")
    assert any(c.status == OK for c in clips if c.dataset == "casme2")


# --------------------------------------------------------------------------- one home per fact


def test_smic_codes_are_one_table_read_both_ways():
    from fr_mer.pipeline.labels import SMIC_CLASS_CODES, SMIC_CODES, smic_emotion_from_clip

    assert set(SMIC_CLASS_CODES) == set(CLASS_INDEX)
    for emotion, code in SMIC_CLASS_CODES.items():
        assert SMIC_CODES[code] == emotion
        assert smic_emotion_from_clip(f"s1_{code}_01") == emotion


def test_list_rows_and_clips_share_one_key_format(composite_release):
    from fr_mer.pipeline.labels import global_subject, sample_key

    folder, listed, releases = composite_release
    entries = read_composite_list(listed)
    clips = resolve_composite(entries, {db: r.root for db, r in releases.items()}, {})
    for entry, clip in zip(entries, clips):
        assert entry.key == clip.key == sample_key(entry.dataset, entry.subject, entry.clip)
        assert clip.key.startswith(global_subject(clip.dataset, clip.subject) + "/")


def test_unknown_database_is_a_parameter_error(tmp_path):
    from fr_mer.errors import ParameterError

    with pytest.raises(ParameterError, match="unknown database 'casme9'"):
        read_database("casme9", tmp_path)


def test_a_release_described_as_data_is_read_by_the_generic_reader(casme2_release):
    """A copy of the CASME II description under other column names reads the same clips."""
    import dataclasses

    from fr_mer.pipeline.readers.annotated import read_annotated_release
    from fr_mer.pipeline.readers.releases import CASME2

    renamed = casme2_release.root.parent / "renamed.csv"
    with open(renamed, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        book = openpyxl.load_workbook(casme2_release.annotations)["Sheet1"]
        for number, row in enumerate(book.iter_rows(values_only=True)):
            cells = ["" if v is None else v for v in row]
            if number == 0:
                cells = ["Subj", "Clip", "", "Start", "Peak", "End", "", "AU", "Emotion"]
            writer.writerow(cells)
    columns = dict(CASME2.columns, subject=("Subj",), filename=("Clip",), onset=("Start",),
                   apex=("Peak",), offset=("End",), emotion=("Emotion",))
    described = dataclasses.replace(CASME2, columns=columns)
    expected = read_database("casme2", casme2_release.root)
    found = read_annotated_release(described, casme2_release.root, renamed)
    assert [(c.key, c.status, c.onset_frame, c.apex_frame, c.offset_frame, c.label) for c in found] == [
        (c.key, c.status, c.onset_frame, c.apex_frame, c.offset_frame, c.label) for c in expected
    ]


def test_docs_name_only_rules_that_exist():
    import re

    from fr_mer.pipeline.readers import discovery, repairs

    text = (Path(__file__).parents[1] / "docs" / "datasets.md").read_text(encoding="utf-8")
    table = text.split("### CASME II and SAMM (annotated rows)")[1].split("**The middle frame**")[0]
    named = re.findall(r"\| `([a-z_.]+)` \|", table)
    assert len(named) >= 10
    for name in named:
        module, _, function = name.rpartition(".")
        owner = {"": repairs, "discovery": discovery}.get(module)
        if owner is not None:
            assert callable(getattr(owner, function)), name


# --------------------------------------------------------------------------- objective classes


def test_samm_objective_classes_column(samm_release):
    clips = by_key(read_database("samm", samm_release.root))
    # the fixture writes 6 for anger/contempt, 1 for happiness, 7 for other
    assert clips["samm/006/006_1_2"].objective_class == 6
    assert clips["samm/007/007_7_1"].objective_class == 1
    assert clips["samm/011/011_2_3"].objective_class == 7


def test_casme2_objective_sheet_wins_over_the_2019_column(tmp_path):
    release = make_casme2(tmp_path / "c", clips=CASME2_CLIPS[:3], spreadsheet="20190701")
    from_column = by_key(read_database("casme2", release.root))
    assert from_column["casme2/sub01/EP02_01f"].objective_class == 2  # disgust -> 2 in the fixture
    sheet = tmp_path / "CASME2-ObjectiveClasses.xlsx"
    book = openpyxl.Workbook()
    book.active.append(["Subject", "Filename", "Objective Class"])
    book.active.append(["01", "EP02_01f", 5])
    book.active.append(["04", "ep12_01f", 3])  # file name case differs
    book.active.append(["26", "EP99_99", 1])  # no such clip: nothing to attach to
    book.save(sheet)
    clips = by_key(read_database("casme2", release.root, objective=sheet))
    first = clips["casme2/sub01/EP02_01f"]
    assert first.objective_class == 5 and "objective class 2 in the coding sheet, 5 in" in first.problem
    assert first.status == OK  # a note, not a repair
    assert clips["casme2/sub04/EP12_01f"].objective_class == 3
    assert clips["casme2/sub05/EP09_05f"].objective_class == 2  # from the column


def test_objective_sheet_is_refused_for_samm_and_smic(samm_release, smic_release, tmp_path):
    sheet = tmp_path / "objective.xlsx"
    with pytest.raises(DatasetError, match="no separate objective-class sheet"):
        read_database("samm", samm_release.root, objective=sheet)
    with pytest.raises(DatasetError, match="no objective classes"):
        read_database("smic", smic_release.root, objective=sheet)


def test_objective_cells(tmp_path):
    from fr_mer.pipeline.labels import objective_class

    assert [objective_class(v) for v in (3, 3.0, "3", " III ", "vii", None, "")] == [3, 3, 3, 3, 7, None, None]
    for bad in (0, 8, "x", 2.5, True):
        with pytest.raises(ValueError):
            objective_class(bad)


def test_scan_table_gains_objective_column_only_when_known(casme2_release, samm_release, tmp_path):
    from fr_mer.pipeline.clips import OBJECTIVE_COLUMN, SCAN_COLUMNS
    from fr_mer.pipeline.scan import format_summary, scan, write_table

    without = scan("casme2", root=casme2_release.root)  # 2014 sheet: no objective column
    write_table(without.clips, tmp_path / "a.csv")
    assert tuple(next(csv.reader(open(tmp_path / "a.csv")))) == SCAN_COLUMNS
    assert "objective class" not in format_summary(without)
    result = scan("samm", root=samm_release.root)
    write_table(result.clips, tmp_path / "b.csv")
    assert tuple(next(csv.reader(open(tmp_path / "b.csv")))) == SCAN_COLUMNS + (OBJECTIVE_COLUMN,)
    assert "usable by objective class (SAMM, 5 known): 1 1, 2 0, 3 0, 4 0, 5 0, 6 3, 7 1" in format_summary(result)
