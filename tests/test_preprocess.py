"""``fr-mer preprocess``: one sample's assembly against known motions, and the resumable run.

Frames are scikit-image's astronaut (a real face, so dlib finds it) moved by
known amounts; the expected flows, crops and dynamic images follow from those
amounts in closed form.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner

from fr_mer.pipeline.align import FaceAligner, rescale_matrix
from fr_mer.pipeline.cache import CacheError, read_cache
from fr_mer.pipeline.clips import REPAIRED, UNUSABLE, Clip
from fr_mer.pipeline.frame_checks import frames_fingerprint
from fr_mer.pipeline.layouts import ClipSpec, write_smic
from fr_mer.pipeline.preprocess import (
    STAGES,
    ClipOptions,
    DynamicImageOptions,
    PreprocessParams,
    PreprocessRun,
    SampleError,
    is_pre_cropped,
    preprocess,
    process_clip,
    read_gray,
)

#: Small flow crops keep TV-L1 fast; the face in the frames is ~110 px wide.
FAST = dict(flow_size=64, head_motion="none")
FRAME_SIZE = (320, 240)


def astronaut_frame(dx: float = 0.0, brightness: float = 0.0, gain: float = 1.0) -> np.ndarray:
    """(240, 320) uint8: the astronaut's face, 1.25x, moved right by ``dx`` frame pixels.

    Bilinear warp of the whole photo, so a sub-pixel ``dx`` moves every pixel
    by exactly ``dx``; ``gain * image + brightness`` before rounding.
    """
    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float32)
    matrix = np.float32([[1.25, 0, -100 * 1.25 + dx], [0, 1.25, -20 * 1.25]])
    frame = cv2.warpAffine(gray, matrix, FRAME_SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(np.rint(frame * gain + brightness), 0, 255).astype(np.uint8)


def make_clip(folder: Path, frames: dict[int, np.ndarray], *, subject: str = "sub01", name: str = "EP01_01",
              emotion: str = "happiness", label: str | None = "positive", apex: int | None = None,
              suffix: str = ".png", dataset: str = "casme2", **fields: object) -> Clip:
    """Write ``frames`` (number -> image) as ``folder/subject/name/img{n}{suffix}``; a Clip for them."""
    clip_dir = folder / subject / name
    clip_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for number, image in frames.items():
        paths[number] = clip_dir / f"img{number}{suffix}"
        assert cv2.imwrite(str(paths[number]), image)
    numbers = sorted(frames)
    return Clip(
        dataset=dataset, subject=subject, clip=name, emotion=emotion, label=label,
        onset_frame=numbers[0], apex_frame=numbers[len(numbers) // 2] if apex is None else apex,
        offset_frame=numbers[-1], frames=paths, **fields,
    )


def shift_clip(folder: Path, dx: float, **kwargs: object) -> Clip:
    """Onset at rest, apex (frame 11) and offset moved right by ``dx`` frame pixels."""
    frames = {10: astronaut_frame(), 11: astronaut_frame(dx), 12: astronaut_frame(dx)}
    return make_clip(folder, frames, apex=11, **kwargs)


def matrix_scale(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))


# -- one sample ---------------------------------------------------------------------

def test_a_known_shift_gives_the_flow_in_crop_pixels(tmp_path):
    """Apex = onset moved 2 frame px right: u = 2 x (crop/frame scale), v = 0, strain ~ 0."""
    clip = shift_clip(tmp_path, 2.0)
    params = PreprocessParams(normalisation="none", **FAST)
    sample = process_clip(clip, params)
    u, v, strain = sample.arrays["flow"]
    scale_to_flow = matrix_scale(sample.arrays["align_matrix"]) * params.flow_size / params.face_size
    inner = (slice(6, 22), slice(6, 22))  # away from the borders TV-L1 cannot see past
    assert u[inner].mean() == pytest.approx(2.0 * scale_to_flow, abs=0.12)
    assert abs(v[inner].mean()) < 0.08
    assert np.median(strain[inner]) < 0.05
    # the same pair with the head's motion subtracted: the translation is gone
    for method in ("nose_flow", "rigid_flow"):
        compensated = process_clip(clip, PreprocessParams(normalisation="none", flow_size=64, head_motion=method))
        assert abs(compensated.arrays["flow"][0][inner].mean()) < 0.1, method


def test_stored_crops_landmarks_and_matrix_agree(tmp_path):
    clip = shift_clip(tmp_path, 1.0)
    params = PreprocessParams(normalisation="minmax255", **FAST)
    sample = process_clip(clip, params)
    arrays = sample.arrays
    s = params.face_size
    assert arrays["onset_face"].shape == arrays["apex_face"].shape == (s, s)
    assert arrays["onset_face"].dtype == np.uint8
    # align_matrix is frame -> onset_face: warping the onset frame with it gives the crop
    aligner = FaceAligner(params.align)
    onset = read_gray(clip.onset_path)
    np.testing.assert_allclose(
        aligner.warp(onset, arrays["align_matrix"], s).astype(int), arrays["onset_face"].astype(int), atol=1
    )
    apex = read_gray(clip.apex_path)
    np.testing.assert_allclose(
        aligner.warp(apex, arrays["align_matrix"], s).astype(int), arrays["apex_face"].astype(int), atol=1
    )
    # landmarks are in onset_face pixels: the eyes sit where the template puts them
    eyes = np.stack([arrays["landmarks"][36:42].mean(0), arrays["landmarks"][42:48].mean(0)])
    np.testing.assert_allclose(eyes, aligner.template_eyes(s), atol=1.0)
    # the flow model input with --normalisation minmax255: each channel u, v, strain to 0..255
    flow = arrays["flow"]
    assert flow.shape == (3, 28, 28) and flow.dtype == np.float32
    np.testing.assert_allclose(flow.reshape(3, -1).min(1), 0, atol=1e-4)
    np.testing.assert_allclose(flow.reshape(3, -1).max(1), 255, atol=1e-3)


def test_meta_label_and_flags(tmp_path):
    clip = shift_clip(tmp_path, 1.0, subject="sub02", name="EP03_02", emotion="disgust", label="negative",
                      status=REPAIRED, problem="apex '/' : middle frame used", apex_rule="middle")
    sample = process_clip(clip, PreprocessParams(**FAST))
    assert sample.repaired
    assert sample.meta == {
        "key": "casme2/sub02/EP03_02", "database": "casme2", "subject": "sub02", "clip": "EP03_02",
        "emotion": "disgust", "label": 0, "onset_frame": 10, "apex_frame": 11, "offset_frame": 12,
        "flags": ["apex_middle", "repaired"], "source": frames_fingerprint(clip),
    }
    others = shift_clip(tmp_path, 1.0, subject="sub03", emotion="others", label=None)
    assert process_clip(others, PreprocessParams(**FAST)).meta["label"] == -1
    assert set(sample.timings) == set(STAGES) - {"write"}
    assert sample.timings["flow"] > 0 and sample.timings["detect"] > 0 and sample.timings["landmarks"] > 0


def test_no_face_falls_back_to_the_whole_frame_and_is_flagged(tmp_path):
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (240, 320), dtype=np.uint8), (5, 5), 0)
    clip = make_clip(tmp_path, {1: noise, 2: np.roll(noise, 1, axis=1), 3: noise})
    sample = process_clip(clip, PreprocessParams(**FAST))
    assert "no_face_whole_frame" in sample.meta["flags"]
    assert np.isnan(sample.arrays["landmarks"]).all()


def test_clip_frames_and_dynamic_images_of_a_brightness_ramp(tmp_path):
    """Frames = base + 3t: clip frames resample the ramp, DSSI gives the change per window."""
    frames = {20 + t: astronaut_frame(gain=0.7, brightness=3 * t) for t in range(9)}
    clip = make_clip(tmp_path, frames, apex=24)
    params = PreprocessParams(
        **FAST, clip=ClipOptions(length=5, size=32),
        dynamic_images=DynamicImageOptions(segments=2, size=24, frames_per_segment=None),
    )
    arrays = process_clip(clip, params).arrays
    clip_frames = arrays["clip_frames"]
    assert clip_frames.shape == (5, 32, 32) and clip_frames.dtype == np.uint8
    # 9 frames to 5: every other frame, each 6 grey levels above the last (OpenCV's
    # fixed-point bilinear warp may round a pixel the other way)
    steps = np.diff(clip_frames.astype(int), axis=0)
    assert np.abs(steps - 6).max() <= 1 and steps.mean() == pytest.approx(6, abs=0.01)
    # the same transform as the faces, at 32 px
    aligner = FaceAligner(params.align)
    expected_first = aligner.warp(frames[20], rescale_matrix(arrays["align_matrix"], params.face_size, 32), 32)
    np.testing.assert_array_equal(clip_frames[0], expected_first)  # resampling keeps the ends
    dynamic = arrays["dynamic_images"]
    assert dynamic.shape == (3, 24, 24) and dynamic.dtype == np.float32
    # segments 0..4 and 4..8 each rise 12 levels, the whole clip 24
    for image, change in zip(dynamic, (12, 12, 24)):
        assert np.abs(image - change).max() < 1 and image.mean() == pytest.approx(change, abs=0.02)


def test_inputs_of_the_clip_models_are_off_by_default():
    specs = PreprocessParams().array_specs()
    assert set(specs) == {"flow", "onset_face", "apex_face", "landmarks", "align_matrix"}
    with_all = PreprocessParams(clip=ClipOptions(), dynamic_images=DynamicImageOptions(segments=4)).array_specs()
    assert with_all["clip_frames"].shape == (16, 112, 112)
    assert with_all["dynamic_images"].shape == (5, 112, 112)


def test_bad_frames_raise_sample_errors_naming_the_file(tmp_path):
    clip = shift_clip(tmp_path, 1.0, suffix=".jpg")
    apex = clip.apex_path
    data = apex.read_bytes()
    apex.write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleError, match=f"{apex.name}.*truncated"):
        process_clip(clip, PreprocessParams(**FAST))
    apex.write_bytes(b"")
    with pytest.raises(SampleError, match=f"{apex.name}.*empty"):
        read_gray(apex)
    apex.write_bytes(b"GIF89a not really an image")
    with pytest.raises(SampleError, match=f"{apex.name}.*unreadable"):
        read_gray(apex)
    apex.unlink()
    with pytest.raises(SampleError, match=f"{apex.name}.*cannot read"):
        read_gray(apex)
    missing = shift_clip(tmp_path / "m", 1.0)
    missing.apex_frame = 15
    with pytest.raises(SampleError, match="apex frame 15 has no file"):
        process_clip(missing, PreprocessParams(**FAST))
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), astronaut_frame())
    png.write_bytes(png.read_bytes()[:-100])
    with pytest.raises(SampleError, match="x.png"):
        read_gray(png)


def test_colour_frames_are_read_as_gray(tmp_path):
    rgb = skimage.data.astronaut()
    path = tmp_path / "c.bmp"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    gray = read_gray(path)
    assert gray.shape == rgb.shape[:2] and gray.dtype == np.uint8
    np.testing.assert_allclose(gray.astype(int), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int), atol=1)


def test_cropped_releases_are_recognised():
    def clip(path: str) -> Clip:
        return Clip("casme2", "sub01", "EP01", "disgust", "negative", 1, 1, 1, frames={1: Path(path)})

    assert is_pre_cropped(clip("/d/Cropped/Cropped/sub01/EP01/reg_img1.jpg"))
    assert is_pre_cropped(clip("/d/SMIC_all_cropped/HS/s1/micro/negative/s1_ne_01/image000001.bmp"))
    assert not is_pre_cropped(clip("/d/uncropped/CASME2_RAW_selected/sub01/EP01/img1.jpg"))


def test_params_are_validated_and_recorded():
    with pytest.raises(ValueError, match="head-motion"):
        PreprocessParams(head_motion="optical")
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessParams(normalisation="zscore")
    with pytest.raises(ValueError, match="landmark model not found"):
        PreprocessParams(predictor="/nonexistent/shape_predictor.dat")
    with pytest.raises(ValueError, match="clip length"):
        ClipOptions(length=1)
    params = PreprocessParams(clip=ClipOptions(8, 64)).as_dict()
    json.dumps(params)  # goes into an HDF5 attribute as JSON
    assert params["clip"] == {"length": 8, "size": 64} and params["dynamic_images"] is None
    assert params["predictor"]["file"] == "shape_predictor_68_face_landmarks.dat"
    assert len(params["predictor"]["sha256"]) == 64
    assert set(params["tvl1"]) >= {"tau", "lambda_", "nscales", "warps"}
    # a checkpoint or a cache gives back the params that made it
    original = PreprocessParams(flow_size=96, head_motion="rigid", dynamic_images=DynamicImageOptions(2, 64, None))
    assert PreprocessParams.from_dict(json.loads(json.dumps(original.as_dict()))) == original
    recorded = original.as_dict()
    recorded["predictor"] = {"file": "other.dat", "sha256": "0" * 64}
    with pytest.raises(ValueError, match="landmark model"):
        PreprocessParams.from_dict(recorded)
    with pytest.raises(ValueError, match="unknown"):
        PreprocessParams.from_dict({**original.as_dict(), "denoise": True})


# -- the run -------------------------------------------------------------------------

def test_run_writes_skips_done_samples_and_records_failures(tmp_path):
    good = [shift_clip(tmp_path / "a", 1.0, subject=f"sub0{i}") for i in range(1, 4)]
    truncated = shift_clip(tmp_path / "b", 1.0, subject="sub04", suffix=".jpg")
    truncated.apex_path.write_bytes(truncated.apex_path.read_bytes()[:500])
    unusable = Clip("casme2", "sub05", "EP09_05f", "repression", "negative", None, None, None,
                    status=UNUSABLE, problem="clip folder sub05/EP09_05f not found")
    out = tmp_path / "cache.h5"
    params = PreprocessParams(**FAST)
    seen = []
    long_name = shift_clip(tmp_path / "c", 1.0, subject="sub06", name="EP" + "0" * 70)  # > the clip column
    summary = preprocess(good[:2] + [truncated, unusable, long_name], out, params, jobs=1, progress=seen.append)
    assert (summary.done, summary.skipped, len(summary.failed)) == (2, 0, 3)
    assert sorted(o.key for o in seen) == sorted(c.key for c in good[:2] + [truncated, long_name])
    assert "longer than 64 bytes" in summary.failed[long_name.key]
    assert "truncated" in summary.failed[truncated.key] and truncated.apex_path.name in summary.failed[truncated.key]
    assert "not found" in summary.failed[unusable.key]
    text = "\n".join(summary.lines())
    assert "2 done, 0 skipped" in text and "3 failed" in text and "sub05/EP09_05f" in text

    cache = read_cache(out, arrays=["flow", "onset_face", "apex_face", "landmarks", "align_matrix"])
    assert sorted(cache.keys) == sorted(c.key for c in good[:2])
    assert set(cache.failures) == {truncated.key, unusable.key, long_name.key}
    assert cache.params == params.as_dict()
    assert {"fr-mer", "opencv", "dlib", "numpy", "h5py"} <= set(cache.software)
    assert cache.array_attrs["flow"]["channels"] == "u,v,strain"

    # the user fixes the image; the rerun makes only what is missing
    cv2.imwrite(str(truncated.apex_path), astronaut_frame(1.0))
    again = preprocess(good + [truncated, unusable], out, params, jobs=1)
    assert (again.done, again.skipped, len(again.failed)) == (2, 2, 1)
    cache = read_cache(out)
    assert len(cache) == 4 and set(cache.failures) == {unusable.key, long_name.key}


def test_changed_params_are_refused_and_overwrite_recomputes(tmp_path):
    clips = [shift_clip(tmp_path, 1.0)]
    out = tmp_path / "cache.h5"
    preprocess(clips, out, PreprocessParams(**FAST), jobs=1)
    with pytest.raises(CacheError, match="flow_size"):
        PreprocessRun(clips, out, PreprocessParams(flow_size=96, head_motion="none"), jobs=1)
    with pytest.raises(CacheError, match="clip"):
        PreprocessRun(clips, out, PreprocessParams(**FAST, clip=ClipOptions(4, 32)), jobs=1)
    summary = preprocess(clips, out, PreprocessParams(**FAST, clip=ClipOptions(4, 32)), jobs=1, overwrite=True)
    assert summary.done == 1
    assert read_cache(out, arrays=["clip_frames"]).arrays["clip_frames"].shape == (1, 4, 32, 32)


def test_clips_scanned_with_another_smic_apex_rule_are_refused(tmp_path):
    clip = shift_clip(tmp_path, 1.0, dataset="smic", subject="s01", name="s01_ne_01", emotion="negative",
                      label="negative", apex_rule="middle")
    with pytest.raises(ValueError, match="--smic-apex"):
        PreprocessRun([clip], tmp_path / "c.h5", PreprocessParams(**FAST, smic_apex="spot"))


def test_two_jobs_give_the_samples_of_one_job(tmp_path):
    clips = [shift_clip(tmp_path, 0.5 * i, subject=f"sub0{i}") for i in range(1, 5)]
    params = PreprocessParams(**FAST)
    one = preprocess(clips, tmp_path / "one.h5", params, jobs=1)
    two = preprocess(clips, tmp_path / "two.h5", params, jobs=2)
    assert one.done == two.done == 4 and two.jobs == 2
    a = read_cache(tmp_path / "one.h5", arrays=["flow", "onset_face"])
    b = read_cache(tmp_path / "two.h5", arrays=["flow", "onset_face"])
    order = [b.keys.index(k) for k in a.keys]
    np.testing.assert_allclose(b.arrays["flow"][order], a.arrays["flow"], atol=1e-3)
    np.testing.assert_array_equal(b.arrays["onset_face"][order], a.arrays["onset_face"])


def write_face_smic(root: Path, n_clips: int, frames_per_clip: int = 5) -> None:
    """An SMIC-HS raw release (real layout) whose frames are the astronaut moving right."""
    codes = [("ne", "negative"), ("po", "positive"), ("sur", "surprise")]
    specs = []
    for i in range(n_clips):
        code, emotion = codes[i % 3]
        subject = 1 + i // 3

        def frame(n: int, i: int = i) -> np.ndarray:
            return cv2.cvtColor(astronaut_frame(0.3 * (n - 1) + 0.1 * i), cv2.COLOR_GRAY2BGR)

        specs.append(ClipSpec(f"s{subject}", f"s{subject}_{code}_0{i + 1}", emotion, 1, None, frames_per_clip,
                              frame=frame))
    write_smic(root, specs)


def test_cli_exit_codes_and_summary(tmp_path):
    from fr_mer.cli import main

    root = tmp_path / "smic"
    write_face_smic(root, 3)
    out = tmp_path / "cache.h5"
    args = ["preprocess", "--dataset", "smic", "--root", str(root), "--out", str(out), "--jobs", "1",
            "--flow-size", "64", "--head-motion", "none"]
    runner = CliRunner()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 done, 0 skipped" in result.output and "0 failed" in result.output
    cache = read_cache(out)
    assert cache.meta["database"] == ["smic"] * 3
    assert sorted(cache.meta["label"]) == [0, 1, 2]
    assert all("apex_middle" in f for f in cache.meta["flags"])
    # changed parameters: refused with a message that says what to do
    result = runner.invoke(main, args[:-4] + ["--flow-size", "96", "--head-motion", "none"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    # a broken frame: that sample fails, the run finishes with exit status 0
    broken = next((root / "SMIC_all_raw" / "HS" / "s1" / "micro" / "negative").glob("*/image000003.bmp"))
    broken.write_bytes(broken.read_bytes()[:200])
    result = runner.invoke(main, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert "2 done" in result.output and "1 failed" in result.output and "image000003.bmp" in result.output
    # unusable inputs: a clear message, non-zero
    result = runner.invoke(main, ["preprocess", "--dataset", "smic", "--root", str(tmp_path / "absent"),
                                  "--out", str(out)])
    assert result.exit_code != 0 and "absent" in result.output
    result = runner.invoke(main, args + ["--tvl1", "lambda=0.1"])
    assert result.exit_code == 2 and "lambda_" in result.output
    # SMIC's apex spotted: the scan and the cache both know the rule
    broken.unlink()
    result = runner.invoke(main, args + ["--smic-apex", "spot", "--overwrite"])
    assert result.exit_code == 0, result.output
    cache = read_cache(out)
    assert cache.params["smic_apex"] == "spot" and len(cache) == 3
    assert all("apex_spotted" in f for f in cache.meta["flags"])


def test_a_bug_stops_preprocess_naming_the_sample_and_keeps_the_finished_ones(tmp_path, monkeypatch):
    """An exception bad data never raises (here an IndexError planted in the pair's computation) is a bug:
    the run stops with exit 3 naming the sample; the samples written before it stay, and a rerun resumes."""
    from fr_mer.cli import main
    from fr_mer.pipeline.preprocess import clip as clip_module

    root = tmp_path / "smic"
    write_face_smic(root, 3)
    out = tmp_path / "cache.h5"
    args = ["preprocess", "--dataset", "smic", "--root", str(root), "--out", str(out), "--jobs", "1",
            "--flow-size", "64", "--head-motion", "none"]
    real_prepare = clip_module.prepare_pair
    calls = []

    def planted(onset, apex, params, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            return [][0]  # a bug in our own code, not bad data
        return real_prepare(onset, apex, params, **kwargs)

    monkeypatch.setattr(clip_module, "prepare_pair", planted)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "IndexError" in result.output and "bug in fr-mer" in result.output
    [named] = {line.split("sample ", 1)[1].split(":")[0] for line in result.output.splitlines()
               if line.startswith("fr_mer.pipeline.preprocess.outcome.SampleBug: sample ")}
    cache = read_cache(out)
    assert len(cache) == 1 and named.startswith("smic/") and named not in cache.meta["key"]
    # the bug's sample is not recorded as a failure of its data: a rerun makes it and keeps the first
    monkeypatch.setattr(clip_module, "prepare_pair", real_prepare)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "2 done, 1 skipped" in result.output and "0 failed" in result.output


def test_data_errors_are_the_samples_own_failures(tmp_path, monkeypatch):
    """What bad data raises (OpenCV's error, a degenerate face's geometry) fails that sample alone."""
    import cv2 as cv

    from fr_mer.pipeline.align import DegenerateImageError
    from fr_mer.pipeline.preprocess import clip as clip_module
    from fr_mer.pipeline.scan import scan

    root = tmp_path / "smic"
    write_face_smic(root, 3)
    clips = scan("smic", root=root).clips
    real_prepare = clip_module.prepare_pair
    raised = iter([cv.error("planted: an image OpenCV cannot take"),
                   DegenerateImageError("the fitting region holds fewer than 3 pixels")])

    def degenerate(onset, apex, params, **kwargs):
        error = next(raised, None)
        if error is not None:
            raise error
        return real_prepare(onset, apex, params, **kwargs)

    monkeypatch.setattr(clip_module, "prepare_pair", degenerate)
    summary = preprocess(clips, tmp_path / "cache.h5", PreprocessParams(flow_size=64, head_motion="none"), jobs=1)
    assert summary.done == 1 and len(summary.failed) == 2
    reasons = " ".join(summary.failed.values())
    assert "error: " in reasons and "DegenerateImageError: the fitting region" in reasons


def test_smic_apex_is_spotted_when_the_scan_left_it_open(tmp_path):
    shifts = [0.0, 0.5, 1.5, 3.0, 1.5, 0.5, 0.0]  # the face moves most at frame 13
    frames = {10 + i: astronaut_frame(dx) for i, dx in enumerate(shifts)}
    clip = make_clip(tmp_path, frames, dataset="smic", subject="s01", name="s01_po_01", emotion="positive",
                     label="positive", apex=None, apex_rule="spot")
    clip.apex_frame = None
    sample = process_clip(clip, PreprocessParams(**FAST, smic_apex="spot"))
    assert sample.meta["apex_frame"] == 13
    assert "apex_spotted" in sample.meta["flags"]
    assert sample.timings["spot"] > 0
    # no face on the onset (a bar over the eyes): the transform comes from the apex, flagged
    hidden = astronaut_frame()
    hidden[100:130, 90:225] = 0
    no_onset_face = make_clip(tmp_path / "b", {**frames, 10: hidden}, dataset="smic", subject="s02",
                              name="s02_po_01", apex=None, apex_rule="spot")
    no_onset_face.apex_frame = None
    sample = process_clip(no_onset_face, PreprocessParams(**FAST, smic_apex="spot"))
    assert {"apex_spotted", "face_from_apex"} <= set(sample.meta["flags"])
    assert sample.meta["apex_frame"] == 13
