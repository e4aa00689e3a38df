"""SMIC-HS: ``SMIC_all_raw/HS/s1/micro/negative/s1_ne_01/image######.bmp`` (or the same tree
under ``SMIC_all_cropped/HS`` with ``reg_image######.bmp`` / ``reg_00001.bmp``).

No annotation file: every clip folder under ``micro/`` is a clip, labelled by the
``ne``/``po``/``sur`` code in its name; onset and offset are the first and last
frame on disk; the apex is chosen by a rule (``SMIC_APEX_RULES``).
"""
from __future__ import annotations

import re
from pathlib import Path

from fr_mer.errors import ParameterError
from fr_mer.pipeline.clips import REPAIRED, UNUSABLE, Clip, numbered_frames
from fr_mer.pipeline.labels import (
    CLASSES,
    DATABASE_TITLES,
    canonical_smic_clip,
    canonical_subject,
    composite_class,
    smic_emotion_from_clip,
)
from fr_mer.pipeline.readers.discovery import (
    SubjectFolders,
    check_root,
    find_subject_folders,
    frames_inside,
    holds_micro,
    inside,
    natural_key,
)
from fr_mer.pipeline.readers.repairs import describe_gaps, empty_files, frame_file_doubts, middle_frame

DATASET = "smic"

#: ``middle``: the middle frame on disk, ``sorted(frames)[len // 2]`` (what most
#: MEGC2019 pipelines use). ``spot``: no apex here; preprocessing spots it from
#: the frames (``Clip.apex_frame`` is None, ``apex_rule`` is ``spot``).
SMIC_APEX_RULES = ("middle", "spot")

_SUBJECT = re.compile(r"s\d+", re.IGNORECASE)

#: Sibling recordings that are not SMIC-HS (25 fps cameras) and clips without a micro-expression.
SKIP = ("nir", "vis", "non_micro", "nonmicro")


def subject_folders(root: Path | str) -> SubjectFolders:
    """``sN`` folders holding ``micro/`` below ``root``; those under an ``HS`` folder win."""
    return find_subject_folders(
        root,
        DATASET,
        pattern=_SUBJECT,
        canonical=lambda name: canonical_subject(DATASET, name),
        accept=holds_micro,
        example="HS/s1/micro, HS/s2/micro, ...",
        skip=SKIP,
        prefer="HS",
    )


def check_apex_rule(smic_apex: str) -> str:
    """``smic_apex`` when it names a rule of SMIC_APEX_RULES; ParameterError otherwise."""
    if smic_apex not in SMIC_APEX_RULES:
        raise ParameterError(
            f"smic_apex must be one of {', '.join(SMIC_APEX_RULES)}, not {smic_apex!r}"
        )
    return smic_apex


def read(root: Path | str, *, smic_apex: str = "middle") -> list[Clip]:
    """One :class:`Clip` per clip folder under ``sN/micro/<emotion>/``, by subject then name."""
    check_apex_rule(smic_apex)
    subjects = subject_folders(check_root(root, DATABASE_TITLES[DATASET]))
    clips: list[Clip] = []
    for subject, subject_folder in subjects.subjects.items():
        micro = next(
            p for p in subject_folder.iterdir() if p.is_dir() and p.name.lower() == "micro"
        )
        folders = [
            (emotion_folder, clip_folder)
            for emotion_folder in sorted(p for p in micro.iterdir() if p.is_dir())
            for clip_folder in sorted(
                (p for p in emotion_folder.iterdir() if p.is_dir()),
                key=lambda p: natural_key(p.name),
            )
        ]
        for emotion_folder, clip_folder in sorted(folders, key=lambda f: natural_key(f[1].name)):
            clips.append(_clip(subject, emotion_folder.name, clip_folder, smic_apex, subjects.base))
    return clips


def _clip(subject: str, folder_emotion: str, folder: Path, smic_apex: str, base: Path) -> Clip:
    name = folder.name
    coded = smic_emotion_from_clip(name)
    folder_emotion = folder_emotion.lower()
    try:
        clip_id = canonical_smic_clip(name)
    except ValueError:  # foo_po_01: no subject before the code
        clip_id = None
    clip = Clip(
        dataset=DATASET,
        subject=subject,
        clip=clip_id or name,
        emotion=coded or "",
        label=None,
        onset_frame=None,
        apex_frame=None,
        offset_frame=None,
        apex_rule=smic_apex,
        source=str(folder),
    )
    if clip_id is None:
        clip.mark(UNUSABLE, f"clip folder {folder}: its name does not start with a subject "
                            f"(s1_po_01, s01_po_01); rename it")
        return clip
    if coded is None:
        if folder_emotion in CLASSES:
            clip.emotion = folder_emotion
            clip.mark(REPAIRED,
                      f"no ne/po/sur code in the clip name: label from its folder {folder_emotion}")
        else:
            clip.mark(UNUSABLE, "no ne/po/sur code in the clip name and its folder "
                                f"{folder_emotion!r} names no emotion")
    elif folder_emotion in CLASSES and folder_emotion != coded:
        clip.mark(REPAIRED, f"clip code says {coded} but it sits in folder {folder_emotion}: "
                            "label from the code")
    clip.label = composite_class(DATASET, clip.emotion) if clip.emotion else None

    if not inside(base, folder):
        # A link anywhere on the way (subject, micro, emotion or clip folder) that leads
        # out of the release is never followed.
        clip.mark(UNUSABLE, f"clip folder {folder} is a link leading outside the dataset root "
                            f"{base}; refused: replace the link by the folder itself")
        return clip
    frames = numbered_frames(folder)
    clip.frames = frames
    if not frames:
        clip.mark(UNUSABLE, f"clip folder {folder} holds no frame images")
        return clip
    clip.onset_frame, clip.offset_frame = min(frames), max(frames)
    if len(frames) < 2:
        clip.mark(UNUSABLE, f"clip folder {folder} holds a single frame")
        return clip
    missing = describe_gaps(frames, clip.onset_frame, clip.offset_frame)
    if missing:
        clip.mark(REPAIRED, missing)
    if smic_apex == "middle":
        clip.apex_frame = middle_frame(frames)
    frames_inside(clip, base)
    empty_files(clip)
    frame_file_doubts(clip)
    return clip
