"""``fr-mer scan`` as a library: resolve every annotated clip to its files, tabulate, summarise.

Nothing is computed from the images; the scan says what fr-mer found in the
user's copies of the databases, row by row, before any preprocessing.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import OBJECTIVE_COLUMN, OK, REPAIRED, SCAN_COLUMNS, UNUSABLE, Clip
from fr_mer.pipeline.composite import describe_list, read_composite_list
from fr_mer.pipeline.labels import CLASSES, DATABASE_TITLES, DATABASES, OBJECTIVE_CLASSES
from fr_mer.pipeline.readers import read_database, resolve_composite, subject_folders, unannotated_clip_folders
from fr_mer.pipeline.readers.releases import ANNOTATED_RELEASES

#: Values of ``--dataset``: each database, or the composite list over those of the composite.
SCAN_DATASETS = tuple(DATABASE_TITLES) + ("composite",)

#: Per-database options of a composite scan, by database (SMIC-HS has no annotation file).
COMPOSITE_ROOTS = {db: f"{db}_root" for db in DATABASES}
COMPOSITE_ANNOTATIONS = {db: f"{db}_annotations" for db in DATABASES if db in ANNOTATED_RELEASES}

#: How many problems the summary lists before pointing at the table.
MAX_LISTED_PROBLEMS = 40

STATUSES = (OK, REPAIRED, UNUSABLE)
NO_CLASS = "(no class)"


class ScanOptionsError(FrMerError, ValueError):
    """Options that do not go together (the CLI reports it as a usage error)."""


@dataclasses.dataclass
class ScanResult:
    """What a scan found.

    ``inputs``: per database, the folder holding its subject folders and the
    annotation file read; for a composite scan also ``composite`` (the list's
    path, sha256, whether it is the official one). ``unannotated``: per
    database, ``subject/clip`` folders on disk that no annotation row names.
    """

    dataset: str
    clips: list[Clip]
    inputs: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    unannotated: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def usable(self) -> list[Clip]:
        return [c for c in self.clips if c.usable]


def scan(
    dataset: str,
    *,
    root: Path | str | None = None,
    annotations: Path | str | None = None,
    casme2_root: Path | str | None = None,
    casme2_annotations: Path | str | None = None,
    samm_root: Path | str | None = None,
    samm_annotations: Path | str | None = None,
    smic_root: Path | str | None = None,
    composite_list: Path | str | None = None,
    smic_apex: str = "middle",
    casme3_root: Path | str | None = None,
    casme3_annotations: Path | str | None = None,
    casme2_objective: Path | str | None = None,
) -> ScanResult:
    """Resolve the clips of one database (``root``, ``annotations``) or of the composite list.

    Composite: one root per database (``casme2_root``, ...) with its annotation
    file; ``root`` may stand for every database root not given (a folder that
    holds all three; databases not found under it give unusable rows).
    ``composite_list`` None means the official list shipped with fr-mer.
    CAS(ME)^3 (not in the composite): ``casme3_root``/``casme3_annotations`` stand
    for ``root``/``annotations``. ``casme2_objective``: CASME II's objective-class
    sheet (``--dataset casme2`` or ``composite``). Raises :class:`ScanOptionsError` for options that do not go together,
    ``pipeline.readers.DatasetError`` / ``pipeline.composite.CompositeListError``
    when an input cannot be used.
    """
    per_db = {
        "casme2_root": casme2_root, "casme2_annotations": casme2_annotations,
        "samm_root": samm_root, "samm_annotations": samm_annotations,
        "smic_root": smic_root, "composite_list": composite_list,
    }
    if dataset not in SCAN_DATASETS:
        raise ScanOptionsError(
            f"--dataset must be one of {', '.join(SCAN_DATASETS)}, not {dataset!r}"
        )
    if casme2_objective is not None and dataset not in ("casme2", "composite"):
        raise ScanOptionsError("--casme2-objective is for --dataset casme2 or composite")
    root, annotations = _casme3_inputs(dataset, root, annotations, casme3_root, casme3_annotations)
    if dataset != "composite":
        given = [name for name, value in per_db.items() if value is not None]
        if given:
            named = ", ".join("--" + g.replace("_", "-") for g in given)
            verb = "is" if len(given) == 1 else "are"
            raise ScanOptionsError(
                f"{named} {verb} only for --dataset composite; for --dataset {dataset} "
                "use --root and --annotations"
            )
        if root is None:
            raise ScanOptionsError(
                f"--dataset {dataset} needs --root (the folder holding the release)"
            )
        if dataset == "smic" and annotations is not None:
            raise ScanOptionsError(
                "SMIC-HS has no annotation file (labels come from the clip folder names): "
                "leave out --annotations"
            )
        clips = read_database(dataset, root, annotations, smic_apex=smic_apex,
                              objective=casme2_objective)
        folders = subject_folders(dataset, root)
        result = ScanResult(dataset, clips)
        result.inputs[dataset] = _inputs(folders.base, clips)
        if casme2_objective is not None:
            result.inputs[dataset]["objective"] = str(casme2_objective)
        missing = unannotated_clip_folders(dataset, root, clips, folders)
        if missing:
            result.unannotated[dataset] = missing
        return result

    if annotations is not None:
        raise ScanOptionsError(
            "--annotations is for a single database; for --dataset composite use "
            "--casme2-annotations and --samm-annotations"
        )
    roots = {db: per_db[COMPOSITE_ROOTS[db]] for db in DATABASES}
    absent_ok = [db for db, value in roots.items() if value is None and root is not None]
    roots = {db: (root if value is None else value) for db, value in roots.items()}
    if all(value is None for value in roots.values()):
        raise ScanOptionsError(
            "--dataset composite needs --casme2-root, --samm-root and/or --smic-root "
            "(or --root, a folder holding all three databases)"
        )
    notes = {db: per_db[COMPOSITE_ANNOTATIONS[db]] for db in COMPOSITE_ANNOTATIONS}
    for db, note in notes.items():
        if note is not None and roots[db] is None:
            raise ScanOptionsError(
                f"--{db}-annotations needs --{db}-root (or --root): the frames it annotates"
            )
    entries = read_composite_list(composite_list)
    listed = describe_list(composite_list)
    if casme2_objective is not None and roots["casme2"] is None:
        raise ScanOptionsError("--casme2-objective needs --casme2-root (or --root)")
    clips = resolve_composite(
        entries, roots, notes, smic_apex=smic_apex, absent_ok=absent_ok, source=str(listed["path"]),
        objective={"casme2": casme2_objective},
    )
    result = ScanResult("composite", clips)
    for db in DATABASES:
        found = [c for c in clips if c.dataset == db and c.frames]
        if found:
            result.inputs[db] = _inputs(subject_folders(db, roots[db]).base, found)
    if casme2_objective is not None and "casme2" in result.inputs:
        result.inputs["casme2"]["objective"] = str(casme2_objective)
    result.inputs["composite"] = listed
    return result


def _casme3_inputs(dataset, root, annotations, casme3_root, casme3_annotations):
    """``--casme3-root``/``--casme3-annotations``: the same as --root/--annotations for casme3."""
    given = [name for name, value in (("--casme3-root", casme3_root),
                                      ("--casme3-annotations", casme3_annotations)) if value is not None]
    if not given:
        return root, annotations
    if dataset != "casme3":
        raise ScanOptionsError(f"{', '.join(given)}: only for --dataset casme3 (CAS(ME)^3 is not "
                               "in the composite list)")
    if root is not None and casme3_root is not None:
        raise ScanOptionsError("give --root or --casme3-root, not both")
    if annotations is not None and casme3_annotations is not None:
        raise ScanOptionsError("give --annotations or --casme3-annotations, not both")
    return root or casme3_root, annotations or casme3_annotations


def _inputs(base: Path, clips: list[Clip]) -> dict[str, object]:
    sources = sorted({c.source for c in clips if c.source and c.row is not None})
    info: dict[str, object] = {"folder": str(base)}
    if sources:
        info["annotations"] = sources[0] if len(sources) == 1 else sources
    return info


def write_table(clips: Iterable[Clip], out: Path | str | TextIO) -> None:
    """The scan table: one row per clip, columns ``SCAN_COLUMNS`` (CSV, UTF-8), then
    ``objective_class`` when some clip's objective class is known."""
    if isinstance(out, (str, Path)):
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            write_table(clips, handle)
        return
    clips = list(clips)
    columns = list(SCAN_COLUMNS)
    if any(c.objective_class is not None for c in clips):
        columns.append(OBJECTIVE_COLUMN)
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for clip in clips:
        writer.writerow(clip.as_row())


def read_scan_table(path: Path | str) -> list[dict[str, str]]:
    """Rows of a scan table as written by :func:`write_table`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summarize(clips: Iterable[Clip]) -> dict[str, object]:
    """Counts per database x (class, status), per class, per status, and the problems.

    Classes are the composite classes; a clip whose emotion is not in the
    composite mapping counts under ``(no class)``. ``problems``: every clip
    with a problem text (unusable, repaired, or a note).
    """
    clips = list(clips)
    by_dataset: dict[str, Counter] = {}
    for clip in clips:
        counter = by_dataset.setdefault(clip.dataset, Counter())
        counter["total"] += 1
        counter[clip.status] += 1
        counter[clip.label or NO_CLASS] += 1
    return {
        "total": len(clips),
        "by_dataset": {db: dict(by_dataset[db]) for db in DATABASE_TITLES if db in by_dataset},
        "by_label": dict(Counter(c.label or NO_CLASS for c in clips)),
        "by_status": {s: sum(c.status == s for c in clips) for s in STATUSES},
        "usable_by_label": dict(Counter(c.label or NO_CLASS for c in clips if c.usable)),
        "usable_by_objective_class": {
            db: dict(sorted(Counter(c.objective_class for c in clips if c.dataset == db and c.usable
                                    and c.objective_class is not None).items()))
            for db in DATABASE_TITLES
            if any(c.dataset == db and c.objective_class is not None for c in clips)
        },
        "problems": [
            {"key": c.key, "status": c.status, "source": c.source, "row": c.row,
             "problem": c.problem}
            for c in clips if c.problem
        ],
    }


def format_summary(result: ScanResult, *, table: str | None = None,
                   max_problems: int = MAX_LISTED_PROBLEMS) -> str:
    """The summary ``fr-mer scan`` prints: inputs, a count table, the problems."""
    summary = summarize(result.clips)
    status = summary["by_status"]
    out = io.StringIO()
    out.write(
        f"fr-mer scan ({result.dataset}): {summary['total']} clips: {status[OK]} ok, "
        f"{status[REPAIRED]} repaired, {status[UNUSABLE]} unusable\n"
    )
    for name, info in result.inputs.items():
        if name == "composite":
            kind = "the official MEGC2019 list" if info.get("official") else "a custom list"
            digest = str(info["sha256"])[:12]
            out.write(f"  composite list: {info['path']} ({kind}, sha256 {digest}...)\n")
            continue
        out.write(f"  {DATABASE_TITLES[name]}: frames in {info['folder']}\n")
        if "annotations" in info:
            out.write(f"  {DATABASE_TITLES[name]}: annotations {info['annotations']}\n")
        if "objective" in info:
            out.write(f"  {DATABASE_TITLES[name]}: objective classes {info['objective']}\n")

    columns = list(CLASSES) + [NO_CLASS] + list(STATUSES) + ["total"]
    width = max(len(c) for c in columns) + 1
    out.write("\n" + "database".ljust(10) + "".join(c.rjust(width) for c in columns) + "\n")
    rows = dict(summary["by_dataset"])
    totals: Counter = Counter()
    for counts in rows.values():
        totals.update(counts)
    if len(rows) > 1:
        rows["all"] = dict(totals)
    for name, counts in rows.items():
        cells = "".join(str(counts.get(c, 0)).rjust(width) for c in columns)
        out.write(name.ljust(10) + cells + "\n")
    usable = summary["usable_by_label"]
    out.write(
        "usable by class: "
        + ", ".join(f"{c} {usable.get(c, 0)}" for c in list(CLASSES) + [NO_CLASS])
        + "\n"
    )

    for name, counts in summary["usable_by_objective_class"].items():
        known = sum(counts.values())
        out.write(
            f"usable by objective class ({DATABASE_TITLES[name]}, {known} known): "
            + ", ".join(f"{c} {counts.get(c, 0)}" for c in OBJECTIVE_CLASSES) + "\n"
        )

    problems = summary["problems"]
    if problems:
        out.write(f"\nproblems ({len(problems)}):\n")
        for item in problems[:max_problems]:
            where = ""
            if item["row"] is not None:
                where = f" ({Path(item['source']).name} row {item['row']})"
            out.write(f"  {item['key']}{where} [{item['status']}]: {item['problem']}\n")
        if len(problems) > max_problems:
            hint = (f"see the problem column of {table}" if table
                    else "write the table with --out to see all")
            out.write(f"  ... and {len(problems) - max_problems} more ({hint})\n")
    for name, folders in result.unannotated.items():
        out.write(
            f"\n{DATABASE_TITLES[name]}: {len(folders)} clip folder(s) on disk without an "
            f"annotation row (not scanned): {', '.join(folders)}\n"
        )
    if table:
        out.write(f"\ntable: {table}\n")
    return out.getvalue()
