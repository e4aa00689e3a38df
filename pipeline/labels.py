"""The database and label facts of fr-mer, in one place.

The databases and their titles, the composite classes, the emotion-to-class
mapping of each database, the SMIC class codes, and the id formats (subject,
sample key). Everything that turns a spreadsheet cell or a folder name into a
class or an id goes through here; nothing else spells these formats.
"""
from __future__ import annotations

import re

from fr_mer.errors import ParameterError

#: Composite classes, in the order of the official list's class index (0, 1, 2).
CLASSES: tuple[str, ...] = ("negative", "positive", "surprise")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Every database fr-mer reads -> its name in messages. The first three are the
#: MEGC2019 composite's, in the order the protocol reports them.
DATABASE_TITLES: dict[str, str] = {"casme2": "CASME II", "samm": "SAMM", "smic": "SMIC-HS"}

#: Databases of the composite, in the order the protocol reports them.
DATABASES: tuple[str, ...] = ("casme2", "samm", "smic")

# MEGC2019: negative = repression, anger, contempt, disgust, fear, sadness;
# for CASME II only disgust and repression (its fear and sadness clips are
# too few and were left out of the official list).
EMOTION_TO_CLASS: dict[str, dict[str, str]] = {
    "casme2": {
        "disgust": "negative",
        "repression": "negative",
        "happiness": "positive",
        "surprise": "surprise",
    },
    "samm": {
        "anger": "negative",
        "contempt": "negative",
        "disgust": "negative",
        "fear": "negative",
        "sadness": "negative",
        "happiness": "positive",
        "surprise": "surprise",
    },
    "smic": {
        "negative": "negative",
        "positive": "positive",
        "surprise": "surprise",
    },
}

#: SMIC-HS names each clip by the code of its class (``s1_ne_01``): class -> code.
SMIC_CLASS_CODES: dict[str, str] = {"negative": "ne", "positive": "po", "surprise": "sur"}
#: The same table read the other way: code -> the emotion (= class) it names.
SMIC_CODES: dict[str, str] = {code: emotion for emotion, code in SMIC_CLASS_CODES.items()}


def check_database(database: str) -> str:
    """``database`` when fr-mer knows it; ParameterError naming the known ones otherwise."""
    if database not in DATABASE_TITLES:
        raise ParameterError(
            f"unknown database {database!r}: expected one of {', '.join(DATABASE_TITLES)}"
        )
    return database


def composite_class(database: str, emotion: str) -> str | None:
    """Composite class name of ``emotion`` in ``database``, or None when dropped."""
    check_database(database)
    return EMOTION_TO_CLASS[database].get(str(emotion).strip().lower())


_DIGITS = re.compile(r"(\d+)")


def canonical_subject(database: str, raw: object) -> str:
    """The subject id used everywhere in fr-mer (and in the official list's style).

    CASME II ``sub01`` (from ``'01'``, ``1``, ``'sub1'``); SAMM ``006`` (from ``6``,
    ``'6'``, ``'006'``: padded to three digits as the folders and STSTNet's weights
    are); SMIC ``s01`` (from ``'s1'``, ``1``).
    """
    check_database(database)
    text = str(raw).strip()
    if text.endswith(".0"):  # spreadsheet cells read as floats
        text = text[:-2]
    match = _DIGITS.search(text)
    if match is None:
        raise ValueError(f"{database}: cannot read a subject number from {raw!r}")
    number = int(match.group(1))
    if database == "casme2":
        return f"sub{number:02d}"
    if database == "samm":
        return f"{number:03d}"
    return f"s{number:02d}"


def disk_subject(database: str, subject: str) -> str:
    """Folder name of a canonical subject id in the release (SMIC is unpadded)."""
    if database == "smic":
        return f"s{int(subject[1:])}"
    return subject


def global_subject(database: str, subject: str) -> str:
    """Subject id unique across databases (``casme2/sub01`` is not ``smic/s01``)."""
    return f"{database}/{subject}"


def sample_key(database: str, subject: str, clip: str) -> str:
    """Unique key of one sample: ``database/subject/clip`` (canonical ids)."""
    return f"{global_subject(database, subject)}/{clip}"


def canonical_smic_clip(clip: str) -> str:
    """``s1_ne_01`` -> ``s01_ne_01`` (the official list pads the subject)."""
    head, _, rest = clip.partition("_")
    return f"{canonical_subject('smic', head)}_{rest}" if rest else clip


def smic_emotion_from_clip(clip: str) -> str | None:
    """``s1_po_03`` -> ``positive``; None when the clip name holds no known code."""
    parts = clip.lower().split("_")
    for part in parts[1:]:
        if part in SMIC_CODES:
            return SMIC_CODES[part]
    return None
