"""The single-database class protocols: CASME II and SAMM in 5 classes, SMIC in its 3
(``--protocol loso --database D --classes N``), against the real sheet's emotions (when
../shared holds it), fixtures in the real layouts, and evaluate / train / probe."""
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.data import sample_labels
from fr_mer.errors import ParameterError
from fr_mer.evaluation import EvalConfig, load_plan_data
from fr_mer.models import model_class
from fr_mer.pipeline.cache import read_cache
from fr_mer.pipeline.labels import (
    CASME2_5_SPACE,
    CLASS_COUNTS,
    CLASS_SPACES,
    COMPOSITE_SPACE,
    SAMM_5_SPACE,
    resolve_label_space,
)
from fr_mer.pipeline.readers import read_database
from fr_mer.pipeline.readers.releases import CASME2
from fr_mer.pipeline.xlsx import cell_text, read_table
from fr_mer.probe import ProbeConfig
from fr_mer.run_plan import make_plan

from .cachefactory import write_flow_cache
from .conftest import make_casme2, make_samm, make_smic

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "casme2-real"
REAL_SHEET = REAL / "CASME2-coding-20140508.xlsx"
FAST = model_class("ststnet").recipe.replace(epochs=1, batch_size=16, lr=1e-2)


def test_the_spaces_are_the_papers_classes():
    assert CASME2_5_SPACE.classes == ("happiness", "disgust", "repression", "surprise", "others")
    assert SAMM_5_SPACE.classes == ("anger", "contempt", "happiness", "surprise", "other")
    assert [CASME2_5_SPACE.label("casme2", e, None) for e in ("Happiness", " others ", "sadness", "fear")] == \
        [0, 4, -1, -1]
    # SAMM's sheet capitalises; its disgust, fear and sadness are outside the 5
    assert [SAMM_5_SPACE.label("samm", e, None) for e in ("Anger", "Contempt", "Other", "Disgust", "Fear",
                                                          "Sadness")] == [0, 1, 4, -1, -1, -1]
    assert CASME2_5_SPACE.label("samm", "happiness", None) == -1  # another database's emotions
    assert CLASS_COUNTS == (3, 4, 5, 7)
    record = SAMM_5_SPACE.record()
    assert record["name"] == "samm-5" and record["emotions"] == {"samm": {e: e for e in SAMM_5_SPACE.classes}}


@pytest.mark.parametrize("database, classes, space", [
    ("casme2", 5, CASME2_5_SPACE), ("samm", 5, SAMM_5_SPACE), ("smic", 3, COMPOSITE_SPACE),
    ("casme2", 3, COMPOSITE_SPACE), ("casme2", None, COMPOSITE_SPACE),
])
def test_loso_resolves_the_database_s_classes(database, classes, space):
    assert resolve_label_space("loso", database, classes) is space


@pytest.mark.parametrize("protocol, database, classes, message", [
    ("loso", "smic", 5, "not a class protocol of --database smic"),
    ("loso", "casme2", 7, "not a class protocol of --database casme2"),
    ("loso", "casme3", 5, "casme2 3, 5; samm 3, 5; smic 3; casme3 3, 4, 7"),
    ("composite", None, 5, "--protocol composite has the composite's 3 classes"),
    ("lodo", None, 5, "--protocol lodo"),
    ("megc2018-cde", None, 5, "objective classes 1-5"),
])
def test_classes_outside_a_database_s_protocols_are_refused(protocol, database, classes, message):
    with pytest.raises(ParameterError, match=message.replace("(", "\\(")):
        resolve_label_space(protocol, database, classes)
    if protocol in ("loso", "composite"):
        with pytest.raises(ParameterError, match="--classes"):
            ProbeConfig(protocol=protocol, database=database, classes=classes)


@pytest.mark.skipif(not REAL_SHEET.is_file(), reason=f"the real CASME II sheet is absent ({REAL_SHEET})")
def test_casme2_5_classes_cover_the_real_sheet():
    """Every emotion of the real coding sheet, read by fr-mer's own xlsx reader, is one of the
    5 classes except sadness and fear, which the field drops."""
    sheet = read_table(REAL_SHEET, CASME2.columns, required=("subject", "filename", "emotion"),
                       sheets=(CASME2.sheet,))
    spelled = Counter(cell_text(row["emotion"]) for row in sheet.rows)
    assert set(spelled) == set(CASME2_5_SPACE.classes) | {"sadness", "fear"}, spelled
    dropped = {e for e in spelled if CASME2_5_SPACE.label("casme2", e, None) < 0}
    assert dropped == {"sadness", "fear"}
    # the 118 clips with frames: 113 in the 5 classes (README of the development set)
    clips = [c for c in read_database("casme2", REAL, REAL_SHEET) if c.usable]
    labelled = Counter(CASME2_5_SPACE.classes[i] for i in
                       (CASME2_5_SPACE.label("casme2", c.emotion, None) for c in clips) if i >= 0)
    assert len(clips) == 118 and sum(labelled.values()) == 113
    assert labelled == {"others": 51, "disgust": 19, "surprise": 16, "happiness": 15, "repression": 12}


def test_fixtures_in_the_real_layouts_read_into_the_spaces(tmp_path):
    casme2 = read_database("casme2", make_casme2(tmp_path / "CASME2").top)
    by_clip = {c.clip: CASME2_5_SPACE.label("casme2", c.emotion, None) for c in casme2}
    assert by_clip["EP02_01f"] == 1 and by_clip["EP09f"] == 4 and by_clip["EP06_02_01"] == -1  # sadness
    samm_release = make_samm(tmp_path / "SAMM_data")
    samm = read_database("samm", samm_release.top, samm_release.annotations)
    assert {c.clip: SAMM_5_SPACE.label("samm", c.emotion, None) for c in samm} == \
        {"006_1_2": 0, "028_4_1": 0, "032_3_1": 1, "007_7_1": 2, "011_2_3": 4}
    smic = read_database("smic", make_smic(tmp_path / "SMIC").top)
    space = resolve_label_space("loso", "smic", 3)
    assert [COMPOSITE_SPACE.classes[space.label("smic", c.emotion, None, COMPOSITE_SPACE.classes.index(c.label))]
            for c in smic] == [c.emotion for c in smic]


def _five_class_cache(tmp_path: Path) -> Path:
    """Three CASME II subjects with two clips of each of the 5 classes, one sadness clip each."""
    rows, emotions = [], {}
    for subject in ("sub01", "sub02", "sub03"):
        for emotion in (*CASME2_5_SPACE.classes, "sadness"):
            for k in range(2 if emotion != "sadness" else 1):
                clip = f"EP_{emotion}_{k}"
                rows.append(("casme2", subject, clip, "negative"))
                emotions[f"casme2/{subject}/{clip}"] = emotion
    return write_flow_cache(tmp_path / "five.h5", rows, emotions=emotions)


def test_evaluate_train_and_probe_run_in_5_classes(tmp_path, one_torch_thread):
    cache = _five_class_cache(tmp_path)
    labels = sample_labels(read_cache(cache), CASME2_5_SPACE)
    assert sorted(Counter(labels.tolist()).items()) == [(-1, 3), (0, 6), (1, 6), (2, 6), (3, 6), (4, 6)]
    plan = make_plan(EvalConfig(model="ststnet", protocol="loso", classes=5, recipe=FAST, seeds=(0,)), cache)
    assert plan.label_space is CASME2_5_SPACE and plan.options["n_classes"] == 5
    assert len(load_plan_data(plan, torch.device("cpu"))) == 30  # sadness dropped

    out = tmp_path / "probe"
    result = CliRunner().invoke(main, ["probe", "--cache", str(cache), "--protocol", "loso", "--database",
                                       "casme2", "--classes", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_space"]["name"] == "casme2-5" and metrics["n_samples"] == 30
    assert json.loads((out / "config.json").read_text())["probe"]["classes"] == 5

    checkpoint = tmp_path / "m.pt"
    result = CliRunner().invoke(main, ["train", "--cache", str(cache), "--protocol", "loso", "--classes", "5",
                                       "--model", "ststnet", "--epochs", "1", "--threads", "1",
                                       "--out", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert torch.load(checkpoint, weights_only=True)["classes"] == list(CASME2_5_SPACE.classes)

    result = CliRunner().invoke(main, ["evaluate", "--cache", str(cache), "--protocol", "loso", "--classes", "7",
                                       "--model", "ststnet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "not a class protocol of --database casme2" in result.output


def test_every_database_has_the_composite_3():
    assert all(spaces[3] is COMPOSITE_SPACE for spaces in CLASS_SPACES.values())
