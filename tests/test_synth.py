"""The synthetic micro-expression generator: read back as the real layouts, the motion
model's amplitude and locality, classes that differ, and bytes that a seed fixes."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.config import from_record, to_record
from fr_mer.errors import ParameterError
from fr_mer.pipeline.flow import tvl1_flow
from fr_mer.pipeline.labels import CLASSES, composite_class
from fr_mer.pipeline.layouts import SMIC_EMOTION_CODES
from fr_mer.pipeline.readers import read_database
from fr_mer.pipeline.scan import read_scan_table
from fr_mer.pipeline.synth import faces, motion, planning, rendering, writing
from fr_mer.pipeline.synth.config import Nuisances, SynthSettings

SMALL = dict(subjects=1, clips_per_subject=3, seed=7)


@pytest.fixture(scope="module")
def photos():
    return faces.load_photos()


@pytest.fixture(scope="module")
def identities(photos):
    return faces.derive_identities(photos, ["sub01", "sub02"], seed=3)


@pytest.fixture(scope="module")
def composite(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "composite"
    return writing.generate_composite(out, photos=photos, **SMALL)


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file except the .xlsx (openpyxl stamps the save time into it)."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix != ".xlsx"
    }


def _sheet_values(path: Path) -> list[tuple]:
    return [tuple(row) for row in openpyxl.load_workbook(path).active.iter_rows(values_only=True)]


# -- read back as the real thing -----------------------------------------------------

def test_composite_scans_every_clip_ok(composite, tmp_path):
    table = tmp_path / "scan.csv"
    result = CliRunner().invoke(main, ["scan", *composite.scan_arguments(), "--out", str(table)])
    assert result.exit_code == 0, result.output
    rows = read_scan_table(table)
    assert len(rows) == composite.n_clips == 3 * SMALL["subjects"] * SMALL["clips_per_subject"]
    assert {r["status"] for r in rows} == {"ok"}, [r["problem"] for r in rows]
    truth = {
        (clip.dataset, clip.clip if clip.dataset != "smic" else "s0" + clip.clip[1:]): clip
        for db in composite.databases.values() for clip in db.clips
    }
    for row in rows:
        clip = truth[(row["dataset"], row["clip"])]
        assert row["label"] == clip.label
        assert int(row["onset_frame"]) == clip.onset and int(row["offset_frame"]) == clip.offset
        assert int(row["n_frames"]) == clip.n_frames
        if row["dataset"] != "smic":  # SMIC has no apex annotation: the middle frame
            assert int(row["apex_frame"]) == clip.apex
    # every class in every database (balanced within each subject)
    for db in composite.databases.values():
        assert db.counts() == dict.fromkeys(CLASSES, 1)


def test_frames_have_each_release_format(composite, photos):
    dbs = composite.databases
    checks = {"casme2": (".jpg", 3), "samm": (".jpg", 2), "smic": (".bmp", 3)}
    aligner_landmarks = faces.detect_landmarks
    for name, (suffix, ndim) in checks.items():
        clips = read_database(name, dbs[name].root, dbs[name].annotations)
        assert len(clips) == SMALL["clips_per_subject"] and all(c.status == "ok" for c in clips)
        onset = clips[0].onset_path
        assert onset.suffix == suffix
        image = cv2.imread(str(onset), cv2.IMREAD_UNCHANGED)
        assert image.ndim == ndim and image.shape[:2] == (240, 320)
        gray = image if ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # the pipeline's own detector finds the face in what was written
        assert aligner_landmarks(gray) is not None


def test_cli_writes_one_layout_that_scan_reads(tmp_path):
    out = tmp_path / "samm"
    args = ["synth", "--out", str(out), "--layout", "samm", "--subjects", "1",
            "--clips-per-subject", "2", "--seed", "1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    scan_line = next(line for line in result.output.splitlines() if "fr-mer scan" in line)
    scan_args = shlex.split(scan_line.strip())[1:]
    table = tmp_path / "scan.csv"
    scanned = CliRunner().invoke(main, [*scan_args, "--out", str(table)])
    assert scanned.exit_code == 0, scanned.output
    assert [r["status"] for r in read_scan_table(table)] == ["ok", "ok"]
    # a second run into the same folder is refused unless --overwrite
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "not empty" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0


def test_overwrite_never_deletes_a_foreign_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not written by fr-mer synth"):
        writing.prepare_out_dir(folder, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "precious"


# -- determinism ---------------------------------------------------------------------

def test_same_seed_same_bytes(composite, photos, tmp_path):
    again = writing.generate_composite(tmp_path / "again", photos=photos, **SMALL)
    first, second = _tree_digest(composite.out_dir), _tree_digest(again.out_dir)
    assert len(first) > 100 and first == second
    for name in ("casme2", "samm"):
        assert _sheet_values(composite.databases[name].annotations) == _sheet_values(
            again.databases[name].annotations
        )
    other = writing.generate(tmp_path / "other", layout="smic", photos=photos,
                             **{**SMALL, "seed": SMALL["seed"] + 1})

    def hs_frames(digest):  # NIR/VIS/non_micro hold the layout writer's fixed dummy frames
        return {v for k, v in digest.items() if "/HS/" in k and "/micro/" in k}

    theirs, ours = hs_frames(_tree_digest(other.out_dir)), hs_frames(first)
    assert theirs and ours and not ours & theirs


#: sha256 over (path, sha256 of the bytes) of the SMALL composite's frames and composite
#: list (not the .xlsx, whose bytes hold the save time, nor the manifest, which gains keys
#: with new settings), per CPU vector instruction set: OpenCV's remap, resize and JPEG encoder
#: take other SIMD paths on AVX-512 and on AVX2-only machines, and their last bits differ. The
#: AVX-512 digest is the one the generator wrote before it was split into configuration,
#: planning, rendering and writing; the AVX2 one was recorded from the split generator on an
#: AVX2-only AMD EPYC (2026-12-02), as a guard against later changes. A digest changes only
#: when the frames or the list change: a new OpenCV (remap, JPEG) is one reason.
SMALL_COMPOSITE_SHA256 = {
    "avx512": "e4b217308fef26bf52ab1283b2b1e0b0ec5b54f04587ffea7472457450a5b085",
    "avx2": "8935661d31633185e67b959094b2dd2fd39be30e3d95270c8f0e4a6996a3c64e",
}


def _vector_instruction_set() -> str | None:
    """"avx512" or "avx2" from the CPU's flags (Linux), None where they cannot be read."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else None


def test_output_bytes_are_those_of_the_unsplit_generator(composite):
    kind = _vector_instruction_set()
    if kind is None:
        pytest.skip("no recorded digest for this CPU's vector instruction set (or /proc/cpuinfo unreadable)")
    digest = hashlib.sha256()
    for path, file_hash in sorted(_tree_digest(composite.out_dir).items()):
        if path != writing.MANIFEST_NAME:
            digest.update(path.encode() + b"\0" + bytes.fromhex(file_hash))
    assert digest.hexdigest() == SMALL_COMPOSITE_SHA256[kind]


def test_frame_depends_only_on_clip_and_number(photos):
    identities, clips = planning.plan_database("casme2", subjects=1, clips_per_subject=1,
                                               photos=photos, seed=5)
    clip = clips[0]
    renderer = rendering.ClipRenderer(identities[0], clip, 5)
    forward = [renderer(n) for n in range(clip.onset, clip.offset + 1)]
    fresh = rendering.ClipRenderer(identities[0], clip, 5)
    backward = [fresh(n) for n in range(clip.offset, clip.onset - 1, -1)][::-1]
    assert all(np.array_equal(a, b) for a, b in zip(forward, backward))


# -- the motion model ------------------------------------------------------------------

def _expressions(n_per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [motion.sample_expression(label, rng) for label in CLASSES for _ in range(n_per_class)]


def test_apex_amplitude_is_bounded_and_local(identities):
    for identity in identities:
        frame = motion.FaceFrame.from_landmarks(identity.landmarks)
        for expression in _expressions(12):
            field = motion.expression_field(identity.landmarks, identity.shape, expression)
            region = motion.expression_region(identity.landmarks, identity.shape, expression)
            magnitude = np.hypot(field[..., 0], field[..., 1]) / frame.px_per_128
            assert magnitude.max() <= motion.MAX_AMPLITUDE_128 + 1e-4
            assert magnitude.max() == pytest.approx(expression.amplitude, rel=1e-4)
            assert magnitude[~region].max() < 0.05
            # local: inside 0.8 IOD of the landmarks its units are anchored on,
            # and a small part of the face
            anchors = sorted({i for code in expression.codes
                              for a in motion.ACTION_UNITS[code].anchors for i in a.landmarks})
            ys, xs = np.nonzero(magnitude > 0)
            points = identity.landmarks[anchors]
            nearest = np.min(np.hypot(xs[:, None] - points[:, 0], ys[:, None] - points[:, 1]), axis=1)
            assert nearest.max() < 0.8 * frame.iod
            face_area = frame.face_width * (identity.landmarks[8, 1] - identity.landmarks[19, 1])
            assert region.sum() < 0.5 * face_area


def test_rendered_apex_moves_the_face_as_the_field_says(photos):
    """No nuisance: pixels outside the regions do not change; inside, TV-L1 sees the field."""
    identities, clips = planning.plan_database(
        "casme2", subjects=1, clips_per_subject=3, photos=photos, seed=11, nuisances=Nuisances.none()
    )
    identity = identities[0]
    frame = motion.FaceFrame.from_landmarks(identity.landmarks)
    for clip in clips:
        renderer = rendering.ClipRenderer(identity, clip, 11)
        onset = cv2.cvtColor(renderer(clip.onset), cv2.COLOR_BGR2GRAY)
        apex = cv2.cvtColor(renderer(clip.apex), cv2.COLOR_BGR2GRAY)
        field = rendering.apex_displacement(identity, clip)
        region = rendering.au_region_mask(identity, clip)
        near = cv2.dilate(region.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        assert np.array_equal(onset[~near], apex[~near])
        assert np.abs(onset[region].astype(int) - apex[region]).max() > 5
        flow = tvl1_flow(onset, apex)
        magnitude = np.hypot(field[..., 0], field[..., 1])
        strong = magnitude > 0.5 * magnitude.max()
        # direction: the measured flow follows the applied field where it is strong
        cosine = (flow[strong] * field[strong]).sum() / (
            np.linalg.norm(flow[strong]) * np.linalg.norm(field[strong]))
        assert cosine > 0.7, (clip.clip, clip.action_units, cosine)
        measured = np.hypot(flow[..., 0], flow[..., 1])[region]
        assert np.percentile(measured, 99) / frame.px_per_128 < 1.3 * motion.MAX_AMPLITUDE_128


def test_classes_move_different_regions_in_different_directions(identities):
    identity = identities[0]
    lm = identity.landmarks
    fields = {label: [] for label in CLASSES}
    for expression in _expressions(30, seed=1):
        fields[expression.label].append(
            motion.expression_field(lm, identity.shape, expression).astype(np.float64))
    mean = {label: np.mean(stack, axis=0) for label, stack in fields.items()}

    def dy_at(label, groups):
        """Mean vertical displacement (px, +down) at the centres of landmark groups."""
        values = []
        for group in groups:
            x, y = np.rint(lm[list(group)].mean(axis=0)).astype(int)
            values.append(mean[label][y, x, 1])
        return float(np.mean(values))

    brows, corners = ((19, 20, 21), (22, 23, 24)), ((48,), (54,))
    assert dy_at("negative", brows) > 0.2 and dy_at("surprise", brows) < -0.2  # down vs up (image y)
    assert dy_at("positive", corners) < -0.2 and dy_at("negative", corners) > 0.1
    assert abs(dy_at("positive", brows)) < 0.05
    for a in CLASSES:
        for b in CLASSES:
            if a < b:
                u, v = mean[a].ravel(), mean[b].ravel()
                assert u @ v / (np.linalg.norm(u) * np.linalg.norm(v)) < 0.3, (a, b)


def test_nuisances_do_not_depend_on_the_class(identities):
    params = {
        label: planning.draw_clip(9, (1, 0, 0, 0), dataset="samm", subject="006", clip="006_1_1",
                                  label=label, identity=identities[0])
        for label in CLASSES
    }
    nuisance = [(p.onset, p.apex, p.offset, p.pose, p.drift, p.blink, p.lighting, p.noise_sigma,
                 p.jpeg_quality) for p in params.values()]
    assert nuisance[0] == nuisance[1] == nuisance[2]
    assert len({p.expression.codes for p in params.values()}) == 3


def test_partial_combinations_and_intensities_vary():
    rng = np.random.default_rng(2)
    seen = {label: set() for label in CLASSES}
    amplitudes = []
    for label in CLASSES:
        for _ in range(200):
            expression = motion.sample_expression(label, rng)
            seen[label].add(frozenset(expression.codes))
            amplitudes.append(expression.amplitude)
    assert seen["negative"] == {frozenset({"AU4"}), frozenset({"AU15"}), frozenset({"AU4", "AU15"})}
    assert {frozenset({"AU12"}), frozenset({"AU12", "AU6"})} == seen["positive"]
    assert len(seen["surprise"]) >= 8 and all(s & {"AU1", "AU2"} for s in seen["surprise"])
    assert 1.0 <= min(amplitudes) < 1.1 and 1.9 < max(amplitudes) <= motion.MAX_AMPLITUDE_128


def test_temporal_profile_closed_form():
    profile = motion.temporal_profile(11, 4, residual=0.2)
    assert profile[0] == 0.0 and profile[4] == 1.0 and profile[-1] == pytest.approx(0.2)
    assert np.all(np.diff(profile[:5]) > 0) and np.all(np.diff(profile[4:]) < 0)
    assert profile[2] == pytest.approx(np.sin(np.pi / 4) ** 2)
    with pytest.raises(ValueError):
        motion.temporal_profile(5, 0)


def test_bump_closed_form():
    r = np.array([0.0, 0.25, 0.5, 0.999, 1.0, 2.0])
    expected = np.clip(1 - r**2, 0, None) ** 3
    np.testing.assert_allclose(motion.bump(r**2), expected)
    # C1 at the rim: the slope vanishes there
    assert (motion.bump(np.array([0.999**2]))[0] - 0.0) / 0.001 < 1e-4


def test_faces_folder(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    big = cv2.resize(faces.astronaut(), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / "b_large.png"), big)
    cv2.imwrite(str(folder / "a_astronaut.png"), faces.astronaut())
    (folder / "notes.txt").write_text("not an image")
    photos = faces.load_photos(folder)
    assert [p.name for p in photos] == ["a_astronaut", "b_large"]
    # large photos are reduced (face at most 320 px wide) with their landmarks
    reduced = photos[1]
    assert np.hypot(*(reduced.landmarks[16] - reduced.landmarks[0])) == pytest.approx(320, abs=1)
    np.testing.assert_allclose(reduced.landmarks * 512 / reduced.image.shape[0], photos[0].landmarks,
                               atol=2)
    cv2.imwrite(str(folder / "c_wall.png"), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="c_wall.png: no face found"):
        faces.load_photos(folder)


def test_identities_differ(identities, photos):
    a, b = identities
    assert a.source == b.source == "astronaut"
    assert np.abs(a.image - b.image).mean() > 10
    assert np.abs(a.landmarks - b.landmarks).mean() > 2


def test_manifest_settings_read_back(composite):
    assert writing.read_settings(composite.manifest) == SynthSettings(layout="composite", **SMALL)
    record = to_record(SynthSettings(nuisances=Nuisances.none()))
    assert record["nuisances"]["jpeg_quality"] is None and record["frame_size"] == [320, 240]
    assert from_record(SynthSettings, record) == SynthSettings(nuisances=Nuisances.none())
    # an older record without a key takes the default; an unknown key is refused
    assert from_record(SynthSettings, {"seed": 3}) == SynthSettings(seed=3)
    with pytest.raises(ParameterError, match="manifest.json: colour: unknown setting"):
        from_record(SynthSettings, {**record, "colour": True}, source="manifest.json")


@pytest.mark.parametrize("bad, match", [
    ({"subjects": 0}, "subjects must be a positive integer"),
    ({"frame_size": (320, 64)}, "too small for the face detector"),
    ({"amplitude": (1.0, 3.0)}, "amplitude range"),
    ({"duration_s": (0.1, 0.05)}, "duration range"),
    ({"layout": "casme1"}, "unknown layout 'casme1'"),
])
def test_settings_out_of_range_are_refused(bad, match):
    with pytest.raises(ParameterError, match=match):
        SynthSettings(**bad)


@pytest.mark.parametrize("bad, match", [
    ({"blink_probability": 1.5}, "blink_probability"),
    ({"jpeg_quality": (95, 80)}, "jpeg_quality"),
    ({"head_shift": -0.1}, "head_shift must be >= 0"),
])
def test_nuisances_out_of_range_are_refused(bad, match):
    with pytest.raises(ParameterError, match=match):
        Nuisances(**bad)
    with pytest.raises(ParameterError, match=match):
        from_record(SynthSettings, {"nuisances": {**to_record(Nuisances()), **bad}})


def test_bad_settings_write_nothing(tmp_path, photos):
    with pytest.raises(ParameterError, match="too small"):
        writing.generate(tmp_path / "out", photos=photos, frame_size=(50, 50))
    assert not (tmp_path / "out").exists()


def test_a_folder_without_photos_is_one_line_exit_1(tmp_path):
    (tmp_path / "faces").mkdir()
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "out"), "--faces", str(tmp_path / "faces")])
    assert result.exit_code == 1
    assert "no image files" in result.output and "Traceback" not in result.output


#: CAS(ME)^3's 3-class protocol as specs/datasets.md states it (others dropped).
CASME3_THREE_CLASSES = {"disgust": "negative", "fear": "negative", "anger": "negative", "sad": "negative",
                        "happy": "positive", "surprise": "surprise"}


def test_emotions_are_spelt_as_the_databases_map_them():
    assert SMIC_EMOTION_CODES == {"negative": "ne", "positive": "po", "surprise": "sur"}
    for dataset, by_class in planning.EMOTIONS.items():
        for label, weights in by_class.items():
            if dataset == "casme3":
                assert {CASME3_THREE_CLASSES[emotion] for emotion in weights} == {label}
            else:
                assert {composite_class(dataset, emotion) for emotion in weights} == {label}


# -- the amplitude option ------------------------------------------------------------

def test_amplitude_scale_multiplies_the_expression_motion(photos):
    plans = {
        scale: planning.plan_database("casme2", subjects=1, clips_per_subject=3, photos=photos, seed=11,
                                      nuisances=Nuisances.none(), amplitude_scale=scale)
        for scale in (1.0, 4.0)
    }
    (identity,), small = plans[1.0]
    _, large = plans[4.0]
    for a, b in zip(small, large):
        assert (a.onset, a.apex, a.offset, a.expression) == (b.onset, b.apex, b.offset, b.expression)
        np.testing.assert_allclose(rendering.apex_displacement(identity, b),
                                   4.0 * rendering.apex_displacement(identity, a), rtol=1e-6)
        assert b.record()["amplitude_px_on_128"] == pytest.approx(4 * a.record()["amplitude_px_on_128"], abs=1e-3)
        render_a, render_b = rendering.ClipRenderer(identity, a, 11), rendering.ClipRenderer(identity, b, 11)
        assert np.array_equal(render_a(a.onset), render_b(b.onset))  # the onset is neutral in both
        change = [np.abs(r(c.apex).astype(int) - r(c.onset)).mean() for r, c in ((render_a, a), (render_b, b))]
        assert change[1] > 2.5 * change[0]


def test_amplitude_option_is_recorded(tmp_path):
    out = tmp_path / "big"
    args = ["synth", "--out", str(out), "--layout", "smic", "--subjects", "1", "--clips-per-subject", "1"]
    assert CliRunner().invoke(main, [*args, "--amplitude", "0"]).exit_code == 2
    result = CliRunner().invoke(main, [*args, "--amplitude", "3"])
    assert result.exit_code == 0, result.output
    settings = writing.read_settings(out / writing.MANIFEST_NAME)
    assert settings.amplitude_scale == 3.0 and settings.amplitude == (1.0, motion.MAX_AMPLITUDE_128)
    (clip,) = json.loads((out / writing.MANIFEST_NAME).read_text())["databases"]["smic"]["clips"]
    assert 3.0 <= clip["amplitude_px_on_128"] <= 3 * motion.MAX_AMPLITUDE_128


# -- CAS(ME)^3 part A ------------------------------------------------------------------

CASME3_SPEC_HEADER = ("Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion")


def test_casme3_layout_as_the_spec_describes(photos, tmp_path):
    summary = writing.generate(tmp_path / "casme3", layout="casme3", subjects=1, clips_per_subject=4,
                               photos=photos, seed=2)
    (db,) = summary.databases.values()
    assert db.annotations == tmp_path / "casme3" / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
    assert summary.scan_arguments() == ["--dataset", "casme3", "--root", str(db.root),
                                        "--annotations", str(db.annotations)]
    header, *rows = _sheet_values(db.annotations)
    assert header == CASME3_SPEC_HEADER and len(rows) == 4
    by_task: dict[tuple, list] = {}
    for subject, task, onset, apex, offset, au, objective, emotion in rows:
        assert subject == "spNO.1" and task in "abcdefghijklm"
        assert onset < apex < offset and emotion in CASME3_THREE_CLASSES
        assert objective in ("I", "II", "III", "IV", "V", "VI", "VII") and au not in (None, "")
        by_task.setdefault((subject, task), []).append((onset, offset))
    # several micro-expressions in one task video, in frames of their own
    assert sorted(len(v) for v in by_task.values()) == [2, 2]
    for (subject, task), spans in by_task.items():
        color = tmp_path / "casme3" / "part_A" / subject / task / "color"
        numbers = sorted(int(p.stem) for p in color.glob("*.jpg"))
        assert numbers == sorted(n for a, b in spans for n in range(a, b + 1))  # unpadded, disjoint
        assert (color.parent / "depth").is_dir()
    onset = cv2.imread(str(color / f"{spans[0][0]}.jpg"), cv2.IMREAD_UNCHANGED)
    assert onset.shape == (720, 1280, 3)
    landmarks = faces.detect_landmarks(cv2.cvtColor(onset, cv2.COLOR_BGR2GRAY))
    assert landmarks is not None
    face_width = np.hypot(*(landmarks[16] - landmarks[0]))
    assert 0.25 * 720 < face_width < 0.45 * 720  # a smaller part of the frame than in CASME II
    record = json.loads(summary.manifest.read_text())
    assert record["settings"]["layout"] == "casme3" and record["settings"]["frame_size"] == [1280, 720]
    assert {c["label"] for c in record["databases"]["casme3"]["clips"]} == set(CLASSES)


def test_casme3_csv_export(tmp_path):
    from fr_mer.pipeline.layouts import ClipSpec, write_casme3

    specs = [ClipSpec("spNO.3", "j", "happy", 28, 30, 33, "12"), ClipSpec("spNO.3", "j", "others", 90, None, 95, "R14")]
    path = write_casme3(tmp_path, specs, annotations="csv", depth=False)
    assert path.name == "cas(me)3_part_A_ME_label_JpgIndex_v2.csv"
    assert path.read_text().splitlines() == [",".join(CASME3_SPEC_HEADER), "spNO.3,j,28,30,33,12,I,happy",
                                             "spNO.3,j,90,/,95,R14,VII,others"]
    assert sorted(int(p.stem) for p in (tmp_path / "part_A/spNO.3/j/color").iterdir()) == [
        *range(28, 34), *range(90, 96)]


# -- subjects from a folder of real faces ----------------------------------------------

def _face_folder(folder: Path) -> Path:
    """Four photos of three people; the first photo of p1 shows no face."""
    folder.mkdir()
    face = faces.astronaut()
    cv2.imwrite(str(folder / "p1_a.png"), np.full((200, 200, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "p1_b.png"), face)
    cv2.imwrite(str(folder / "p2_x.png"), face[:, ::-1])
    cv2.imwrite(str(folder / "p3_y.jpg"), cv2.resize(face, (400, 400)))
    return folder


def test_faces_are_grouped_into_people(tmp_path):
    folder = _face_folder(tmp_path / "faces")
    photos = faces.load_photos(folder)
    assert [(p.name, p.person) for p in photos] == [("p1_b", "p1"), ("p2_x", "p2"), ("p3_y", "p3")]
    composite = writing.generate_composite(tmp_path / "composite", photos=photos, clips_per_subject=1, seed=1)
    sources = [[i.source for i in db.identities] for db in composite.databases.values()]
    assert sources == [["p1_b"], ["p2_x"], ["p3_y"]]  # each person one subject of one database
    single = writing.generate(tmp_path / "single", layout="samm", photos=photos, clips_per_subject=1, seed=1)
    assert [i.source for i in single.databases["samm"].identities] == ["p1_b", "p2_x", "p3_y"]
    assert not any("note:" in line for line in single.lines())
    reused = writing.generate(tmp_path / "reused", layout="smic", photos=photos, subjects=4, clips_per_subject=1)
    assert any("3 people for 4 subjects" in line for line in reused.lines())


def test_a_person_without_a_face_is_named(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("q1_a.png", "q1_b.png"):
        cv2.imwrite(str(folder / name), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(faces.PhotoError, match=r"q1_a.png: no face found .* of 'q1' \(q1_a.png, q1_b.png\)"):
        faces.load_photos(folder)


APEX_FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "megc2019" / "apex_faces"


@pytest.mark.skipif(not APEX_FACES.is_dir(), reason=f"real apex faces not found at {APEX_FACES}")
def test_real_apex_faces_make_one_subject_per_person(tmp_path):
    photos = faces.load_photos(APEX_FACES)
    people = {p.person for p in photos}
    assert len(photos) == len(people) == 68  # 24 CASME II, 28 SAMM, 16 SMIC-HS people
    summary = writing.generate_composite(tmp_path / "dev", photos=photos, faces=APEX_FACES, clips_per_subject=1)
    persons = [faces.person_of(i.source) for db in summary.databases.values() for i in db.identities]
    assert all(len(db.identities) >= 20 for db in summary.databases.values())
    assert len(persons) == len(set(persons)) == 66
    assert writing.read_settings(summary.manifest).subjects == 22


def test_manifest_records_ground_truth(composite):
    record = json.loads(composite.manifest.read_text())
    assert record["complete"] is True and record["settings"]["seed"] == SMALL["seed"]
    clips = [c for db in record["databases"].values() for c in db["clips"]]
    assert len(clips) == composite.n_clips
    assert all(0 < c["amplitude_px_on_128"] <= motion.MAX_AMPLITUDE_128 for c in clips)
