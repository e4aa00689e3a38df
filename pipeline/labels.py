"""The database and label facts of fr-mer, in one place.

The databases and their titles, the composite classes, the emotion-to-class
mapping of each database, the label spaces a run can predict (composite,
CAS(ME)^3's 4 and 7 classes, MEGC2018's objective classes 1-5), the SMIC class codes, and the id formats (subject,
sample key). Everything that turns a spreadsheet cell or a folder name into a
class or an id goes through here; nothing else spells these formats.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from fr_mer.errors import ParameterError

#: Composite classes, in the order of the official list's class index (0, 1, 2).
CLASSES: tuple[str, ...] = ("negative", "positive", "surprise")
CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

#: Every database fr-mer reads -> its name in messages. The first three are the
#: MEGC2019 composite's, in the order the protocol reports them; CAS(ME)^3 is part A.
DATABASE_TITLES: dict[str, str] = {
    "casme2": "CASME II", "samm": "SAMM", "smic": "SMIC-HS", "casme3": "CAS(ME)^3",
}

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
    # The 3-class protocol of CAS(ME)^3 papers: negative = disgust, fear, anger,
    # sad; positive = happy; surprise; others dropped.
    "casme3": {
        "disgust": "negative",
        "fear": "negative",
        "anger": "negative",
        "sad": "negative",
        "happy": "positive",
        "surprise": "surprise",
    },
}

#: Objective classes (MEGC2018, Davison et al.): CASME II and SAMM write 1-7,
#: CAS(ME)^3 the roman numerals I-VII; fr-mer records the number.
OBJECTIVE_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
_ROMAN = dict(zip(("I", "II", "III", "IV", "V", "VI", "VII"), OBJECTIVE_CLASSES))

#: The seven emotions of CAS(ME)^3's ``emotion`` column, in the order of its papers' tables.
CASME3_EMOTIONS: tuple[str, ...] = ("disgust", "surprise", "fear", "anger", "sad", "happy", "others")

#: The 5 classes of CASME II's single-database papers, as its sheet spells them (lower case);
#: its sadness and fear clips (9 of 255) are dropped.
CASME2_5_CLASSES: tuple[str, ...] = ("happiness", "disgust", "repression", "surprise", "others")
#: The 5 classes of SAMM's single-database papers (its sheet capitalises them: ``Other``);
#: its disgust, fear and sadness clips (23 of 159) are dropped.
SAMM_5_CLASSES: tuple[str, ...] = ("anger", "contempt", "happiness", "surprise", "other")

#: MEGC2018 used objective classes 1-5 of CASME II and SAMM; 6 and 7 are dropped.
MEGC2018_OBJECTIVE_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5)
MEGC2018_DATABASES: tuple[str, ...] = ("casme2", "samm")


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The classes a run predicts and how a sample's annotation maps to one.

    ``emotions``: database -> stored emotion (lower case) -> class name; a sample
    whose emotion has no entry is dropped. ``objective``: objective class -> class
    name, used instead of emotions when set. ``cached_label``: the cache's own
    ``label`` column (the composite classes) is the class, as the composite list
    made it (an imported cache's emotion is the class name).
    """

    name: str
    classes: tuple[str, ...]
    emotions: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    objective: Mapping[int, str] = dataclasses.field(default_factory=dict)
    cached_label: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def label(self, database: str, emotion: str, objective_class: int | None,
              cached_label: int = -1) -> int:
        """The class index of one sample, -1 when the space drops it."""
        if self.cached_label:
            return int(cached_label) if 0 <= int(cached_label) < self.n_classes else -1
        if self.objective:
            name = self.objective.get(objective_class) if objective_class is not None else None
        else:
            name = self.emotions.get(database, {}).get(str(emotion).strip().lower())
        return self.classes.index(name) if name is not None else -1

    def record(self) -> dict[str, object]:
        """The space as data for config.json and metrics.json: name, classes and the mapping used."""
        record: dict[str, object] = {"name": self.name, "classes": list(self.classes)}
        if self.objective:
            record["objective_classes"] = {str(k): v for k, v in self.objective.items()}
        else:
            record["emotions"] = {db: dict(mapping) for db, mapping in self.emotions.items()}
        return record


#: The default: the composite's three classes (the cache's label column; CAS(ME)^3's 3 classes).
COMPOSITE_SPACE = LabelSpace("composite", CLASSES, EMOTION_TO_CLASS, cached_label=True)
#: CAS(ME)^3 with 4 classes: the 3 classes plus others.
CASME3_4_SPACE = LabelSpace("casme3-4", CLASSES + ("others",),
                            {"casme3": {**EMOTION_TO_CLASS["casme3"], "others": "others"}})
#: CAS(ME)^3 with its 7 emotions.
CASME3_7_SPACE = LabelSpace("casme3-7", CASME3_EMOTIONS, {"casme3": {e: e for e in CASME3_EMOTIONS}})
#: MEGC2018 objective classes 1-5 (class names ``1`` .. ``5``).
OBJECTIVE_SPACE = LabelSpace("megc2018-objective", tuple(str(c) for c in MEGC2018_OBJECTIVE_CLASSES),
                             objective={c: str(c) for c in MEGC2018_OBJECTIVE_CLASSES})
#: CASME II with the 5 classes of its single-database papers.
CASME2_5_SPACE = LabelSpace("casme2-5", CASME2_5_CLASSES, {"casme2": {e: e for e in CASME2_5_CLASSES}})
#: SAMM with the 5 classes of its single-database papers.
SAMM_5_SPACE = LabelSpace("samm-5", SAMM_5_CLASSES, {"samm": {e: e for e in SAMM_5_CLASSES}})
LABEL_SPACES: dict[str, LabelSpace] = {
    space.name: space for space in (COMPOSITE_SPACE, CASME2_5_SPACE, SAMM_5_SPACE, CASME3_4_SPACE,
                                    CASME3_7_SPACE, OBJECTIVE_SPACE)
}
#: ``--protocol loso --database D --classes N`` -> the label space. 3 is the composite's
#: three classes for every database (SMIC's own three: its clips are coded ne/po/sur).
CLASS_SPACES: dict[str, dict[int, LabelSpace]] = {
    "casme2": {3: COMPOSITE_SPACE, 5: CASME2_5_SPACE},
    "samm": {3: COMPOSITE_SPACE, 5: SAMM_5_SPACE},
    "smic": {3: COMPOSITE_SPACE},
    "casme3": {3: COMPOSITE_SPACE, 4: CASME3_4_SPACE, 7: CASME3_7_SPACE},
}
#: Every ``--classes`` value some database has.
CLASS_COUNTS: tuple[int, ...] = tuple(sorted({n for spaces in CLASS_SPACES.values() for n in spaces}))


def resolve_label_space(protocol: str, database: str | None, classes: int | None) -> LabelSpace:
    """The classes a run predicts: MEGC2018's objective classes 1-5 for its protocols,
    the database's ``--classes`` (:data:`CLASS_SPACES`) for
    ``--protocol loso``, the composite's three otherwise."""
    if protocol.startswith("megc2018"):
        if classes is not None:
            raise ParameterError(f"--classes is for --protocol loso; --protocol {protocol} uses the objective "
                                 "classes 1-5")
        return OBJECTIVE_SPACE
    if classes is None or classes == 3:
        return COMPOSITE_SPACE
    offered = "; ".join(f"{name} {', '.join(map(str, spaces))}" for name, spaces in CLASS_SPACES.items())
    if protocol != "loso" or database is None:
        raise ParameterError(f"--classes {classes} is a single-database protocol (--protocol loso --database D); "
                             f"--protocol {protocol} has the composite's 3 classes (--classes per database: "
                             f"{offered})")
    space = CLASS_SPACES.get(database, {}).get(classes)
    if space is None:
        raise ParameterError(f"--classes {classes} is not a class protocol of --database {database} "
                             f"(--classes per database: {offered})")
    return space


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


def objective_class(raw: object) -> int | None:
    """The objective class of a cell (``3``, ``3.0``, ``'3'``, ``'III'``), None when blank.

    ValueError for anything else (the reader reports it on the row).
    """
    if raw is None:
        return None
    text = "" if isinstance(raw, bool) else str(raw).strip()
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"{raw!r} is not an objective class (1-7 or I-VII)")
    if not text:
        return None
    if text.upper() in _ROMAN:
        return _ROMAN[text.upper()]
    if text.endswith(".0"):
        text = text[:-2]
    if text.isdigit() and int(text) in OBJECTIVE_CLASSES:
        return int(text)
    raise ValueError(f"{raw!r} is not an objective class (1-7 or I-VII)")


#: How each database writes a subject id, and the canonical form: the prefix a cell
#: or folder name may carry (matched ignoring case) and the format of the number.
#: CASME II ``sub01``; SAMM ``006`` (three digits, as the folders and STSTNet's weights
#: are); SMIC ``s01`` (padded, as the official list; the folders are not); CAS(ME)^3
#: ``spNO.1`` (as the folders and the annotation file).
SUBJECT_FORMATS: dict[str, tuple[str, str]] = {
    "casme2": ("sub", "sub{:02d}"),
    "samm": ("", "{:03d}"),
    "smic": ("s", "s{:02d}"),
    "casme3": ("spno.", "spNO.{}"),
}

#: Subject numbers have at most this many digits (the largest release has ~100
#: subjects); a longer number is a typo or a hostile cell, never a subject.
MAX_SUBJECT_DIGITS = 4


def canonical_subject(database: str, raw: object) -> str:
    """The subject id used everywhere in fr-mer (and in the official list's style).

    Accepts the database's own prefix or none, then the number: CASME II ``sub01``
    from ``'01'``, ``1``, ``1.0``, ``'sub1'``; SAMM ``006`` from ``6``, ``'006'``;
    SMIC ``s01`` from ``'s1'``, ``1``; CAS(ME)^3 ``spNO.1`` from ``'spNO.1'``, ``1``.
    Anything else (``'1/../etc'``, ``'1e25'``, ``'subXX'``, a fraction, a number of
    more than MAX_SUBJECT_DIGITS digits) raises ValueError: reading the first digits
    of such a cell would file the row under the wrong subject.
    """
    check_database(database)
    prefix, form = SUBJECT_FORMATS[database]
    if isinstance(raw, bool):
        raise ValueError(f"{database}: {raw!r} is not a subject id")
    if isinstance(raw, float) and not raw.is_integer():
        raise ValueError(f"{database}: {raw!r} is not a subject number")
    text = str(int(raw)) if isinstance(raw, float) else str(raw).strip()
    if text.endswith(".0"):  # spreadsheet cells read as floats, then as text
        text = text[:-2]
    if prefix and text.lower().startswith(prefix):
        text = text[len(prefix):]
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_SUBJECT_DIGITS:
        raise ValueError(f"{database}: cannot read a subject number from {raw!r}")
    return form.format(int(text))


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


def key_subject(key: str) -> str:
    """The subject id of a sample key (:func:`sample_key`): ``casme2/sub01/EP02_01f`` -> ``sub01``."""
    return key.split("/")[1]


def subject_number(database: str, subject: str) -> str:
    """A canonical subject id without its database's prefix: CASME II ``sub01`` -> ``01`` (the cell of its
    coding spreadsheet); SAMM's ``006`` has none."""
    prefix = SUBJECT_FORMATS[database][0]
    return subject[len(prefix):] if prefix and subject.lower().startswith(prefix) else subject


def is_canonical_subject(database: str, subject: str) -> bool:
    """Whether ``subject`` is spelt as :func:`canonical_subject` spells it (``spNO.1``, not ``spNO.01``)."""
    try:
        return canonical_subject(database, subject) == subject
    except ValueError:
        return False


def composite_subject(dataset: str, subject: object) -> str:
    """A subject id as the official composite list writes it: ``sub01``, ``s01``, SAMM unpadded ``6``."""
    canonical = canonical_subject(dataset, subject)
    return str(int(canonical)) if dataset == "samm" else canonical


def canonical_smic_clip(clip: str) -> str:
    """``s1_ne_01`` -> ``s01_ne_01`` (the official list pads the subject)."""
    head, _, rest = clip.partition("_")
    return f"{canonical_subject('smic', head)}_{rest}" if rest else clip


def smic_disk_clip(clip: str) -> str:
    """``s01_ne_01`` or ``s1_ne_01`` -> ``s1_ne_01`` (the releases do not pad)."""
    canonical = canonical_smic_clip(clip)
    head, _, rest = canonical.partition("_")
    return f"{disk_subject('smic', head)}_{rest}"


def smic_emotion_from_clip(clip: str) -> str | None:
    """``s1_po_03`` -> ``positive``; None when the clip name holds no known code."""
    parts = clip.lower().split("_")
    for part in parts[1:]:
        if part in SMIC_CODES:
            return SMIC_CODES[part]
    return None
