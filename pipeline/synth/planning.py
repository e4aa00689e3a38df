"""Which subjects and clips a synthetic database holds, drawn before anything is rendered.

:func:`plan_database` derives a database's subjects from the photos and draws
every clip's parameters (:class:`~fr_mer.pipeline.synth.config.ClipParams`):
class, emotion, timing, expression and nuisances.

Determinism: every random draw comes from a ``numpy`` Generator seeded by
``SeedSequence(seed, spawn_key=...)`` with a key naming what is drawn
(:func:`random_stream`: the stream's tag, the database, subject, clip and frame), so
the same seed gives the same bytes, in any order of generation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fr_mer.pipeline.labels import CLASSES, canonical_subject, disk_subject
from fr_mer.pipeline.layouts import CASME3_SUBJECT, CASME3_TASKS, SMIC_EMOTION_CODES
from fr_mer.pipeline.synth import motion
from fr_mer.pipeline.synth.config import (
    DEFAULT_AMPLITUDE,
    DEFAULT_DURATION_S,
    DEFAULT_FACE_SPAN,
    DEFAULT_FRAME_SIZE,
    FPS,
    LAYOUT_FACE_SPAN,
    LAYOUTS,
    ClipParams,
    Nuisances,
    check_counts,
    check_frame_size,
    check_layout,
    check_plan_ranges,
)
from fr_mer.pipeline.synth.faces import Identity, Photo, derive_identities

#: Database spelling of each class's emotions, with their weights (the real
#: releases' proportions among the composite's emotions).
EMOTIONS: dict[str, dict[str, dict[str, float]]] = {
    "casme2": {
        "negative": {"disgust": 63, "repression": 27},
        "positive": {"happiness": 1},
        "surprise": {"surprise": 1},
    },
    "samm": {
        "negative": {"Anger": 57, "Contempt": 12, "Disgust": 9, "Fear": 8, "Sadness": 6},
        "positive": {"Happiness": 1},
        "surprise": {"Surprise": 1},
    },
    "smic": {
        "negative": {"negative": 1},
        "positive": {"positive": 1},
        "surprise": {"surprise": 1},
    },
    # CAS(ME)^3 part A spells its emotions in lower case; the proportions are ours.
    "casme3": {
        "negative": {"disgust": 4, "fear": 2, "anger": 1, "sad": 1},
        "positive": {"happy": 1},
        "surprise": {"surprise": 1},
    },
}
#: First frame numbers a clip's onset is drawn from, per database (as in the releases).
ONSET_RANGE: dict[str, tuple[int, int]] = {"casme2": (1, 400), "samm": (100, 6000), "smic": (1, 4000)}
#: CAS(ME)^3 films one video per task and annotates several micro-expressions in it:
#: this many clips share a task folder, each in its own span of frame numbers.
CASME3_CLIPS_PER_TASK = 2

# spawn-key tags: what a random stream is for
IDENTITY_STREAM, CLIP_STREAM, FRAME_STREAM = 0, 1, 2


def random_stream(seed: int, *key: int) -> np.random.Generator:
    """The Generator of ``SeedSequence(seed, spawn_key=key)``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def clip_name(dataset: str, subject: str, index: int, label: str, count: int) -> str:
    """Disk name of a clip in the database's style.

    CASME II ``EP02_01f`` (episode, take), SAMM ``006_1_2`` (subject, inducement,
    take), SMIC ``s1_ne_01`` (disk subject, class code, running number per class).
    """
    if dataset == "casme2":
        return f"EP{index // 2 + 1:02d}_{index % 2 + 1:02d}f"
    if dataset == "samm":
        return f"{subject}_{index // 2 + 1}_{index % 2 + 1}"
    if dataset == "casme3":  # the task letter: CASME3_CLIPS_PER_TASK clips share it
        return CASME3_TASKS[(index // CASME3_CLIPS_PER_TASK) % len(CASME3_TASKS)]
    return f"{disk_subject('smic', subject)}_{SMIC_EMOTION_CODES[label]}_{count:02d}"


def casme3_onset_range(index: int, duration_s: tuple[float, float]) -> tuple[int, int]:
    """Onsets of CAS(ME)^3 clip ``index`` of a subject: a span of frame numbers that no
    other clip of the same task video can reach (clips in one folder never share a frame)."""
    slot = index % CASME3_CLIPS_PER_TASK + CASME3_CLIPS_PER_TASK * (
        index // (CASME3_CLIPS_PER_TASK * len(CASME3_TASKS)))
    span = max(4, int(np.ceil(duration_s[1] * FPS["casme3"])) + 1) + 100
    return 1 + slot * span, 1 + slot * span + 100


def subject_ids(dataset: str, count: int) -> list[str]:
    """Canonical subject ids in the database's style (SAMM's start at 006 as the release)."""
    if dataset == "casme3":
        return [CASME3_SUBJECT.format(1 + i) for i in range(count)]
    first = 6 if dataset == "samm" else 1
    return [canonical_subject(dataset, first + i) for i in range(count)]


def draw_clip(
    seed: int,
    key: tuple[int, ...],
    *,
    dataset: str,
    subject: str,
    clip: str,
    label: str,
    identity: Identity,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE,
    amplitude_scale: float = 1.0,
    duration_s: tuple[float, float] = DEFAULT_DURATION_S,
    onset_range: tuple[int, int] | None = None,
) -> ClipParams:
    """The parameters of one clip, from ``SeedSequence(seed, spawn_key=key + ...)``.

    The expression (and emotion) come from one stream, the timing and every
    nuisance from another: the nuisances of a clip do not depend on its class.
    ``onset_range``: where the onset is drawn (default: the database's :data:`ONSET_RANGE`).
    """
    rng = random_stream(seed, *key, 0)
    expression_rng = random_stream(seed, *key, 1)
    fps = FPS[dataset]
    n_frames = max(4, int(round(rng.uniform(*duration_s) * fps)))
    apex_index = int(np.clip(round(rng.uniform(0.3, 0.6) * (n_frames - 1)), 1, n_frames - 2))
    onset = int(rng.integers(*(onset_range or ONSET_RANGE[dataset])))
    expression = motion.sample_expression(label, expression_rng, amplitude=amplitude)
    scale = motion.FaceFrame.from_landmarks(identity.landmarks).px_per_128
    n = nuisances
    pose = (
        float(rng.uniform(-1, 1) * n.pose_shift * scale),
        float(rng.uniform(-1, 1) * n.pose_shift * scale),
        float(rng.uniform(-1, 1) * n.pose_rotation_deg),
    )
    drift = (
        float(rng.normal() * n.head_shift * scale),
        float(rng.normal() * n.head_shift * scale),
        float(rng.normal() * n.head_rotation_deg),
    )
    blink = None
    if rng.random() < n.blink_probability:
        length = int(rng.integers(4, 9)) * fps // 200 + 2
        start = int(rng.integers(-length + 2, n_frames - 1))
        blink = (start, length, float(rng.uniform(*n.blink_amplitude)))
    quality = None if n.jpeg_quality is None else int(rng.integers(n.jpeg_quality[0], n.jpeg_quality[1] + 1))
    return ClipParams(
        dataset=dataset,
        subject=subject,
        clip=clip,
        label=label,
        emotion=_choose(expression_rng, EMOTIONS[dataset][label]),
        expression=expression,
        onset=onset,
        apex=onset + apex_index,
        offset=onset + n_frames - 1,
        residual=float(rng.uniform(0.0, 0.3)),
        pose=pose,
        drift=drift,
        drift_shape=float(rng.uniform()),
        blink=blink,
        lighting=(
            float(rng.uniform(-1, 1) * n.lighting),
            float(rng.uniform(-1, 1) * n.lighting),
            float(rng.uniform(0, 360)),
        ),
        noise_sigma=float(rng.uniform(*n.noise_sigma)),
        jpeg_quality=quality if dataset != "smic" else None,  # SMIC frames are .bmp
        key=tuple(key),
        amplitude_scale=float(amplitude_scale),
    )


def plan_database(
    dataset: str,
    *,
    subjects: int,
    clips_per_subject: int,
    photos: Sequence[Photo],
    seed: int,
    frame_size: tuple[int, int] = DEFAULT_FRAME_SIZE,
    nuisances: Nuisances = Nuisances(),
    amplitude: tuple[float, float] = DEFAULT_AMPLITUDE,
    amplitude_scale: float = 1.0,
    duration_s: tuple[float, float] = DEFAULT_DURATION_S,
    first_photo: int = 0,
) -> tuple[list[Identity], list[ClipParams]]:
    """Subjects and clip parameters of one database (nothing written).

    Subject ``i`` comes from photo ``first_photo + i`` (in turn when there are fewer
    photos): the databases of a composite start where the previous one ended, so that
    each person of a photo folder is one subject of one database while there are enough.
    Classes are balanced within each subject (round robin from a random
    start, then shuffled), so every subject has every class when it has three
    clips or more.
    """
    check_layout(dataset)
    check_counts(subjects, clips_per_subject)
    frame_size = check_frame_size(frame_size)
    check_plan_ranges(amplitude, duration_s, amplitude_scale)
    d = LAYOUTS.index(dataset)
    ids = subject_ids(dataset, subjects)
    identities = derive_identities(list(photos), ids, seed, frame_size, key=(IDENTITY_STREAM, d),
                                   first=first_photo, face_span=LAYOUT_FACE_SPAN.get(dataset, DEFAULT_FACE_SPAN))
    clips: list[ClipParams] = []
    for s, (subject, identity) in enumerate(zip(ids, identities)):
        rng = random_stream(seed, CLIP_STREAM, d, s)
        start = int(rng.integers(len(CLASSES)))
        labels = [CLASSES[(start + k) % len(CLASSES)] for k in range(clips_per_subject)]
        labels = [labels[i] for i in rng.permutation(clips_per_subject)]
        per_label: dict[str, int] = {}
        for k, label in enumerate(labels):
            per_label[label] = per_label.get(label, 0) + 1
            name = clip_name(dataset, subject, k, label, per_label[label])
            clips.append(
                draw_clip(
                    seed, (CLIP_STREAM, d, s, k),
                    dataset=dataset, subject=subject, clip=name, label=label,
                    identity=identity, nuisances=nuisances, amplitude=amplitude,
                    amplitude_scale=amplitude_scale, duration_s=duration_s,
                    onset_range=casme3_onset_range(k, duration_s) if dataset == "casme3" else None,
                )
            )
    return identities, clips
