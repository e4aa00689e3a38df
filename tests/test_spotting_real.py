"""benchmarks/spotting_real.py on two subjects of the real CASME II development set (skipped when
../shared is absent): every clip spotted between its onset and offset, the repaired apex left out
of the errors, the errors those of the predictions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from fr_mer.pipeline.preprocess import PreprocessParams
from fr_mer.pipeline.readers import read_database

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "casme2-real"

pytestmark = pytest.mark.skipif(not (REAL / "Cropped").is_dir(), reason=f"the development set is absent ({REAL})")


def script():
    spec = importlib.util.spec_from_file_location("benchmarks_spotting_real", ROOT / "benchmarks" / "spotting_real.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_two_development_subjects_are_spotted_and_measured():
    bench = script()
    clips = [c for c in read_database("casme2", REAL) if c.usable and c.subject in ("sub01", "sub05")]
    rows = [bench.spot_clip(c, PreprocessParams()) for c in clips]
    assert len(rows) == len(clips) > 10
    assert all(r["onset"] <= r["spotted"] <= r["offset"] for r in rows)
    repaired = [r for r in rows if r["apex_rule"] != "annotated"]
    assert [r["key"] for r in repaired] == ["casme2/sub05/EP09_05f"]  # its sheet apex is its onset
    errors = bench.error_table(rows)
    measured = [r for r in rows if r["apex_rule"] == "annotated"]
    spotted_error = np.abs([r["spotted"] - r["sheet_apex"] for r in measured])
    assert errors["spotted"]["n"] == len(measured)
    assert errors["spotted"]["median"] == float(np.median(spotted_error))
    assert errors["spotted"]["within"]["10"] == pytest.approx(float(np.mean(spotted_error <= 10)))
    middle_error = np.abs([r["middle"] - r["sheet_apex"] for r in measured])
    assert errors["middle"]["mean"] == pytest.approx(float(middle_error.mean()))
