"""Small caches for model and evaluation tests (random but class-separable flows)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fr_mer.pipeline.cache import ArraySpec, CacheWriter
from fr_mer.pipeline.composite import read_composite_list
from fr_mer.pipeline.labels import CLASSES, CLASS_INDEX, sample_key


def write_flow_cache(path: Path, rows: list[tuple], *, seed: int = 0,
                     separable: bool = True, size: int = 28, emotions: dict[str, str] | None = None,
                     normalisation: str | None = None) -> Path:
    """rows: (database, subject, clip, class name[, objective class]). Each class gets its own flow
    pattern plus noise. ``emotions``: key -> the emotion stored (default: the class name).
    ``normalisation``: None records none (a cache made before the choice: read as minmax255) and
    stores values around 128; ``"none"`` records raw flow and stores values around 0, a few pixels."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(len(CLASSES), 3, size, size)).astype(np.float32)
    spec = {"flow": ArraySpec((3, size, size), "f4", {"channels": "u,v,strain", "normalisation": "none"})}
    params = {"test": True} if normalisation is None else {"test": True, "normalisation": normalisation}
    gain, offset = (0.5, 0.0) if normalisation == "none" else (40.0, 128.0)
    with CacheWriter(path, params=params, arrays=spec) as writer:
        for database, subject, clip, label, *objective in rows:
            key = sample_key(database, subject, clip)
            noise = rng.normal(scale=1.0, size=(3, size, size)).astype(np.float32)
            flow = (patterns[CLASS_INDEX[label]] * (2.0 if separable else 0.0) + noise) * gain + offset
            writer.append({"key": key, "database": database, "subject": subject,
                           "clip": clip, "emotion": (emotions or {}).get(key, label), "label": CLASS_INDEX[label],
                           "onset_frame": 1, "apex_frame": 2, "offset_frame": 3,
                           "objective_class": objective[0] if objective else None}, {"flow": flow})
    return path


def small_composite(tmp_path: Path, subjects_per_db: int = 3, clips_per_class: int = 2,
                    normalisation: str | None = None) -> tuple[Path, Path]:
    """A cache and a composite list over a few subjects per database; returns (cache, list).
    ``normalisation``: as :func:`write_flow_cache`'s."""
    ids = {"casme2": lambda i: f"sub{i + 1:02d}", "samm": lambda i: f"{i + 6:03d}", "smic": lambda i: f"s{i + 1:02d}"}
    rows, lines = [], []
    for database, make in ids.items():
        for s in range(subjects_per_db):
            subject = make(s)
            for label in CLASSES:
                for k in range(clips_per_class):
                    clip = f"{subject}_{label[:2]}_{k}"
                    rows.append((database, subject, clip, label))
                    listed = str(int(subject)) if database == "samm" else subject
                    lines.append(f"{database},{listed},{clip},{CLASS_INDEX[label]}")
    cache = write_flow_cache(tmp_path / "small.h5", rows, normalisation=normalisation)
    listing = tmp_path / "small_list.csv"
    listing.write_text("\r\n".join(lines) + "\r\n")
    assert len(read_composite_list(listing)) == len(rows)
    return cache, listing


def small_megc2018(tmp_path: Path, subjects_per_db: int = 2) -> Path:
    """CASME II and SAMM subjects with one clip of each objective class 1-7 (6 and 7 are dropped by
    MEGC2018), plus SMIC subjects, which have none; returns the cache."""
    ids = {"casme2": lambda i: f"sub{i + 1:02d}", "samm": lambda i: f"{i + 6:03d}", "smic": lambda i: f"s{i + 1:02d}"}
    rows = []
    for database, make in ids.items():
        for s in range(subjects_per_db):
            subject = make(s)
            for objective in range(1, 8):
                label = CLASSES[(objective - 1) % len(CLASSES)]
                rows.append((database, subject, f"{subject}_oc{objective}", label,
                             None if database == "smic" else objective))
    return write_flow_cache(tmp_path / "megc2018.h5", rows)
