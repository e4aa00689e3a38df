"""Shared fixtures: the real release layouts (structure and headers exact, invented pixels).

Each ``*_release`` fixture writes one release with ``pipeline.layouts`` into a fresh
temporary folder and returns a :class:`Release` (where it is, what was written).
The clip lists below carry the quirks of ../shared/specs/datasets.md; tests that
need a special case write their own small release with the same writers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fr_mer.pipeline.labels import CLASS_INDEX
from fr_mer.pipeline.layouts import (
    CASME2_FOLDERS,
    ClipSpec,
    write_casme2,
    write_composite_list,
    write_frames,
    write_samm,
    write_smic,
)

#: CASME II clips: img98..img103 crosses img100 (text order puts img100 first);
#: apex '/' (sub04 EP12_01f), apex == onset (sub05 EP09_05f), apex == offset,
#: Subject stored as an int, irregular names, AU cells '4+L10', 'R1+R2', '?', 14.
CASME2_CLIPS = (
    ClipSpec("sub01", "EP02_01f", "disgust", 98, 100, 103, "4+L10"),
    ClipSpec("sub04", "EP12_01f", "disgust", 10, None, 14, "4"),
    ClipSpec("sub05", "EP09_05f", "repression", 20, 20, 24, "R1+R2"),
    ClipSpec("sub02", "EP01_11f", "happiness", 30, 33, 33, "12"),
    ClipSpec("sub03", "EP01_2", "surprise", 5, 6, 8, "1+2", cells={"Subject": 3}),
    ClipSpec("sub09", "EP09f", "others", 40, 41, 43, "?"),
    ClipSpec("sub11", "EP06_02_01", "sadness", 7, 8, 9, "14"),
)

#: Clip folders on disk that have no spreadsheet row in the real release.
CASME2_UNANNOTATED = (("sub09", "EP02_02f"), ("sub24", "EP02_07"))

#: SAMM clips: apex after the offset (028_4_1) and before the onset (032_3_1),
#: Subject stored as an int, AU strings with 'or', '/', 'ref(...)', trailing spaces.
SAMM_CLIPS = (
    ClipSpec("006", "006_1_2", "Anger", 5562, 5564, 5566, "4+7 or 4"),
    ClipSpec("028", "028_4_1", "Anger", 1130, 1143, 1134, "R14/L14"),
    ClipSpec("032", "032_3_1", "Contempt", 4896, 1930, 4900, "ref(12) "),
    ClipSpec("007", "007_7_1", "Happiness", 100, 102, 104, "12", cells={"Subject": 7}),
    ClipSpec("011", "011_2_3", "Other", 20, 21, 23, "7 "),
)

#: SMIC-HS clips, named unpadded on disk (s1_ne_01) or canonically (s01_po_01; written s1_po_01);
#: s10 sorts after s2 by number; 6-digit absolute frame numbers.
SMIC_CLIPS = (
    ClipSpec("s01", "s1_ne_01", "negative", 170921, None, 170924),
    ClipSpec("s01", "s01_po_01", "positive", 1, None, 5),
    ClipSpec("s02", "s2_sur_01", "surprise", 99998, None, 100002),
    ClipSpec("s10", "s10_ne_03", "negative", 40, None, 42),
)


@dataclasses.dataclass
class Release:
    """A written release: ``root`` (the folder written into), ``top`` (the release's top
    folder), ``annotations`` (its spreadsheet, None for SMIC), ``clips`` (what was written)."""

    root: Path
    top: Path
    annotations: Path | None
    clips: tuple[ClipSpec, ...]


def make_casme2(root: Path, clips=CASME2_CLIPS, **options) -> Release:
    annotations = write_casme2(root, clips, **options)
    release = options.get("release", "raw")
    top = root / CASME2_FOLDERS[release]
    if options.get("nest"):
        top = top / CASME2_FOLDERS[release]
    name = "img{}.jpg" if release == "raw" else "reg_img{}.jpg"
    for subject, clip in CASME2_UNANNOTATED:
        write_frames(top / subject / clip, range(1, 4), name)
    return Release(root, top, annotations, tuple(clips))


def make_samm(root: Path, clips=SAMM_CLIPS, **options) -> Release:
    annotations = write_samm(root, clips, **options)
    top = root / "SAMM" / ("SAMM" if options.get("nest") else "")
    return Release(root, top, annotations, tuple(clips))


def make_smic(root: Path, clips=SMIC_CLIPS, **options) -> Release:
    write_smic(root, clips, **options)
    top = root / ("SMIC_all_raw" if options.get("release", "raw") == "raw" else "SMIC_all_cropped")
    return Release(root, top, None, tuple(clips))


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small models run faster so, and CI has 2 cores)."""
    import torch  # here, not at the top: the pipeline's tests need no torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def casme2_release(tmp_path) -> Release:
    """CASME II raw-selected release, 20140508 coding sheet, junk files, two unannotated folders."""
    return make_casme2(tmp_path / "CASME2")


@pytest.fixture
def samm_release(tmp_path) -> Release:
    """SAMM release: MICRO_ONLY sheet with 13 note rows, header on row 14."""
    return make_samm(tmp_path / "SAMM_data")


@pytest.fixture
def smic_release(tmp_path) -> Release:
    """SMIC_all_raw with HS (read) beside NIR, VIS and non_micro (ignored)."""
    return make_smic(tmp_path / "SMIC")


@pytest.fixture
def composite_release(tmp_path):
    """All three releases under one folder and a composite list in the official format.

    The list names every annotated composite clip of the fixtures plus one clip
    per database that is not on disk. Returns (folder, list path, releases by database).
    """
    folder = tmp_path / "databases"
    releases = {
        "casme2": make_casme2(folder / "CASME2"),
        "samm": make_samm(folder / "SAMM_v2"),
        "smic": make_smic(folder / "SMIC"),
    }
    rows = [
        ("casme2", "sub01", "EP02_01f", CLASS_INDEX["negative"]),
        ("casme2", "sub05", "EP09_05f", CLASS_INDEX["negative"]),
        ("casme2", "sub02", "EP01_11f", CLASS_INDEX["positive"]),
        ("casme2", "sub03", "EP01_2", CLASS_INDEX["surprise"]),
        ("casme2", "sub26", "EP99_01", CLASS_INDEX["negative"]),
        ("smic", "s01", "s01_ne_01", CLASS_INDEX["negative"]),
        ("smic", "s01", "s01_po_01", CLASS_INDEX["positive"]),
        ("smic", "s02", "s02_sur_01", CLASS_INDEX["surprise"]),
        ("smic", "s10", "s10_ne_03", CLASS_INDEX["negative"]),
        ("smic", "s20", "s20_po_09", CLASS_INDEX["positive"]),
        ("samm", "006", "006_1_2", CLASS_INDEX["negative"]),
        ("samm", "028", "028_4_1", CLASS_INDEX["negative"]),
        ("samm", "032", "032_3_1", CLASS_INDEX["negative"]),
        ("samm", "007", "007_7_1", CLASS_INDEX["positive"]),
        ("samm", "036", "036_7_4", CLASS_INDEX["surprise"]),
    ]
    listed = write_composite_list(tmp_path / "composite.csv", rows)
    return folder, listed, releases
