"""`fr-mer predict --clip`: a user's own clip (a folder of frames or a video), its apex spotted or
given, preprocessed as `fr-mer preprocess` makes a sample; a development clip (skipped when
../shared is absent); bad inputs with one-line messages."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fr_mer.checkpoint import save_checkpoint
from fr_mer.cli import main
from fr_mer.inference import predict_clip, predict_pair
from fr_mer.models import create_model, model_class
from fr_mer.pipeline.clips import Clip
from fr_mer.pipeline.preprocess import PreprocessParams, process_clip
from fr_mer.pipeline.user_clip import ClipReadError, read_user_clip
from fr_mer.randomness import seeded_initialisation

from .test_preprocess import FAST, astronaut_frame

REAL_CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "casme2-real" / "Cropped" / "sub01" / "EP02_01f"

#: The synthetic clip: 13 frames numbered 8..20 (img9 sorts before img10 by number), the mouth
#: pulled down most at frame 14 (index 6).
NUMBERS = range(8, 21)
PEAK_INDEX = 6


def mouth_frame(amount: float) -> np.ndarray:
    """The astronaut's face with the region of her mouth moved down by ``amount`` pixels (a smooth bump)."""
    face = astronaut_frame()
    y, x = np.mgrid[0:face.shape[0], 0:face.shape[1]].astype(np.float32)
    bump = np.exp(-((x - 165) ** 2 + (y - 175) ** 2) / (2 * 14.0 ** 2)).astype(np.float32)
    return cv2.remap(face, x, y - amount * bump, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def clip_frames() -> list[np.ndarray]:
    return [mouth_frame(3.0 * max(0.0, 1 - abs(i - PEAK_INDEX) / 5)) for i in range(len(NUMBERS))]


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for number, frame in zip(NUMBERS, clip_frames()):
        assert cv2.imwrite(str(folder / f"img{number}.png"), frame)
    (folder / "Thumbs.db").write_bytes(b"junk")  # not a frame: ignored
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An (untrained) STSTNet with the test preprocessing's parameters recorded."""
    with seeded_initialisation(0):
        model = create_model("ststnet")
    path = tmp_path_factory.mktemp("model") / "ststnet.pt"
    return save_checkpoint(path, model, fold=None, seed=0, recipe=model_class("ststnet").recipe,
                           preprocess_params=PreprocessParams(**FAST).as_dict())


def test_a_folder_of_frames_is_spotted_and_classified_as_preprocess_makes_it(tmp_path, checkpoint):
    folder = write_folder(tmp_path / "clip")
    result = predict_clip(checkpoint, folder)
    assert (result.onset, result.offset, result.apex_spotted) == (0, len(NUMBERS) - 1, True)
    assert abs(result.apex - PEAK_INDEX) <= 1
    assert result.frame_names == ("img8.png", f"img{NUMBERS[result.apex]}.png", "img20.png")
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)

    # preprocessing spots the same apex in the same frames as a clip without one ...
    paths = {n: folder / f"img{n}.png" for n in NUMBERS}
    clip = Clip(dataset="smic", subject="s01", clip="s01_po_01", emotion="positive", label="positive",
                onset_frame=NUMBERS[0], apex_frame=None, offset_frame=NUMBERS[-1], frames=paths, apex_rule="spot")
    sample = process_clip(clip, PreprocessParams(**FAST, smic_apex="spot"))
    assert sample.meta["apex_frame"] == NUMBERS[result.apex]
    # ... and the pair's flow is the one predict makes of the two frame files
    pair = predict_pair(checkpoint, paths[NUMBERS[0]], paths[NUMBERS[result.apex]])
    assert list(pair.probabilities.values()) == pytest.approx(list(result.probabilities.values()), abs=1e-6)

    given = predict_clip(checkpoint, folder, onset=1, apex=4)
    assert (given.onset, given.apex, given.apex_spotted) == (1, 4, False)
    # the flow decides: another pair gives other probabilities (so the equalities above are the flow's)
    assert list(given.probabilities.values()) != pytest.approx(list(result.probabilities.values()), abs=1e-4)
    pair = predict_pair(checkpoint, paths[9], paths[12])
    assert list(pair.probabilities.values()) == pytest.approx(list(given.probabilities.values()), abs=1e-6)


def test_a_video_is_read_frame_by_frame(tmp_path, checkpoint):
    video = tmp_path / "clip.avi"
    frames = clip_frames()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 200.0, frames[0].shape[::-1])
    if not writer.isOpened():
        pytest.skip("this OpenCV build writes no MJPG .avi")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    clip = read_user_clip(video)
    assert len(clip.frames) == len(frames) and clip.names[3] == "frame 3" and not clip.pre_cropped
    assert clip.frames[0].shape == frames[0].shape
    assert np.abs(clip.frames[PEAK_INDEX].astype(int) - frames[PEAK_INDEX]).mean() < 3  # MJPG is lossy

    result = CliRunner().invoke(main, ["predict", "--model", str(checkpoint), "--clip", str(video), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert set(payload["probabilities"]) == {"negative", "positive", "surprise"}
    assert payload["frames"]["apex_spotted"] and abs(payload["frames"]["apex"] - PEAK_INDEX) <= 1
    assert payload["frames"]["names"]["onset"] == "frame 0"

    text = CliRunner().invoke(main, ["predict", "--model", str(checkpoint), "--clip", str(video), "--apex", "5"])
    assert text.exit_code == 0, text.output
    assert "frames: onset 0 (frame 0), apex 5 (frame 5, given), offset 12 (frame 12)" in text.output


@pytest.mark.skipif(not REAL_CLIP.is_dir(), reason=f"the development set is absent ({REAL_CLIP})")
def test_a_development_clip(tmp_path):
    """sub01 EP02_01f (happiness): onset 46, sheet apex 59 (index 13), offset 86; the release's
    cropped frames, so the padded detection of a cropped release is used."""
    with seeded_initialisation(0):
        model = create_model("ststnet")
    path = save_checkpoint(tmp_path / "m.pt", model, fold=None, seed=0, recipe=model_class("ststnet").recipe,
                           preprocess_params=PreprocessParams().as_dict())
    clip = read_user_clip(REAL_CLIP)
    assert clip.pre_cropped and clip.names[0] == "reg_img46.jpg" and len(clip.frames) == 41
    result = predict_clip(path, REAL_CLIP)
    assert result.frame_names[0] == "reg_img46.jpg" and result.frame_names[2] == "reg_img86.jpg"
    assert abs(result.apex - 13) <= 5 and result.apex_spotted
    assert "no_face_whole_frame" not in result.flags


def test_bad_clips_are_refused_with_one_line(tmp_path, checkpoint):
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(main, ["predict", "--model", str(checkpoint), *args])

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    result = run("--clip", str(empty))
    assert result.exit_code == 1 and "holds no frame images" in result.output and "Traceback" not in result.output

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01 not a video" * 100)
    result = run("--clip", str(broken))
    assert result.exit_code == 1 and "not a video OpenCV can decode" in result.output

    folder = write_folder(tmp_path / "clip")
    result = run("--clip", str(folder), "--onset", "5", "--apex", "5")
    assert result.exit_code == 1 and "apex 5 must come after the onset 5" in result.output
    result = run("--clip", str(folder), "--onset", "12")
    assert result.exit_code == 1 and "onset 12 must be a frame index from 0 to 11" in result.output
    result = run("--clip", str(folder), "--apex", "first")
    assert result.exit_code == 2 and "frame index" in result.output
    result = run("--onset", str(folder / "img8.png"))
    assert result.exit_code == 2 and "--apex" in result.output

    one = tmp_path / "one"
    one.mkdir()
    cv2.imwrite(str(one / "img1.png"), astronaut_frame())
    with pytest.raises(ClipReadError, match="at least an onset and an apex"):
        read_user_clip(one)
    cv2.imwrite(str(one / "img2.png"), astronaut_frame()[:100])
    with pytest.raises(ClipReadError, match="img2.png: frame size"):
        read_user_clip(one)
