"""One reader for every release annotated by a coding spreadsheet, driven by its description.

CASME II and SAMM differ only in data: where their subject folders are and what
they hold, the annotation file's name, sheet and header texts, and how the
emotion is spelled. :class:`AnnotatedRelease` holds that data
(``pipeline.readers.releases`` describes each release); :func:`read_annotated_release`
reads any release so described, by the rules of ``pipeline.readers.repairs``.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from fr_mer.pipeline.clips import UNUSABLE, Clip
from fr_mer.pipeline.labels import DATABASE_TITLES, canonical_subject, composite_class, objective_class
from fr_mer.pipeline.readers.discovery import (
    DatasetError,
    SubjectFolders,
    check_root,
    find_annotation_file,
    find_subject_folders,
    frames_folder,
    frames_inside,
    locate_clip_folder,
)
from fr_mer.pipeline.readers.repairs import attach_frames, duplicate_row
from fr_mer.pipeline.xlsx import Sheet, SheetError, cell_text, read_table

#: Fields every annotated release's sheet must have (the header row is the first row holding them).
REQUIRED_FIELDS = ("subject", "filename", "onset", "apex", "offset", "emotion")


@dataclasses.dataclass(frozen=True)
class AnnotatedRelease:
    """What a coding-spreadsheet release looks like on disk.

    ``dataset``: its id in :data:`pipeline.labels.DATABASE_TITLES`.
    ``subject_folder``: the name of a subject folder (``sub\\d+``), ``subject_holds``
    what such a folder must hold to count (junk of the same name does not),
    ``subject_example`` the names shown in messages.
    ``columns``: field -> the header texts that mean it (matched ignoring case,
    spaces and punctuation); the fields of :data:`REQUIRED_FIELDS` must be there.
    ``sheet``: the sheet to read first in an .xlsx (None: the sheets in their order).
    ``annotation_file`` / ``annotation_example``: how the spreadsheet beside the
    release is recognised, and its released name(s) for messages.
    ``lower_case_emotion``: the Estimated Emotion cell is stored in lower case
    (CASME II) rather than as written (SAMM's capitalised labels).
    ``frames_folder``: the folder of the clip folder that holds the frames
    (CAS(ME)^3's ``color``, beside the ignored ``depth``); None: the clip folder.
    ``onset_in_id``: one video holds several samples, so a sample's id is
    ``<Filename>/<onset>`` (CAS(ME)^3 ``j/28``) instead of the Filename alone.
    ``objective_sheet``: header texts of a separate objective-class sheet
    (CASME II's ``CASME2-ObjectiveClasses.xlsx``: subject, filename, objective), if any.
    """

    dataset: str
    subject_folder: re.Pattern[str]
    subject_holds: Callable[[Path], bool]
    subject_example: str
    columns: Mapping[str, tuple[str, ...]]
    sheet: str | None
    annotation_file: re.Pattern[str]
    annotation_example: str
    lower_case_emotion: bool = False
    frames_folder: str | None = None
    onset_in_id: bool = False
    objective_sheet: Mapping[str, tuple[str, ...]] | None = None

    @property
    def title(self) -> str:
        return DATABASE_TITLES[self.dataset]

    def folder_of(self, clip_id: str) -> str:
        """The clip folder a sample id names (``j/28`` -> ``j`` when the onset is in the id)."""
        return clip_id.split("/", 1)[0] if self.onset_in_id else clip_id


def subject_folders(release: AnnotatedRelease, root: Path | str) -> SubjectFolders:
    """The release's subject folders anywhere below ``root`` (raises DatasetError)."""
    return find_subject_folders(
        root,
        release.dataset,
        pattern=release.subject_folder,
        canonical=lambda name: canonical_subject(release.dataset, name),
        accept=release.subject_holds,
        example=release.subject_example,
    )


def read_annotations(release: AnnotatedRelease, path: Path | str) -> Sheet:
    """The annotation sheet's rows; DatasetError naming the file when it cannot be used."""
    sheets = () if release.sheet is None else (release.sheet,)
    try:
        sheet = read_table(path, release.columns, required=REQUIRED_FIELDS, sheets=sheets)
    except SheetError as error:
        raise DatasetError(f"{error} (the {release.title} annotation file)") from None
    if not sheet.rows:
        raise DatasetError(
            f"{sheet.where}: the header is on row {sheet.header_row} but no clip rows follow; "
            f"give the complete {release.title} annotation file"
        )
    return sheet


def read_objective_sheet(release: AnnotatedRelease, path: Path | str) -> dict[tuple[str, str], int]:
    """A separate objective-class sheet: (subject, clip folder in lower case) -> class 1-7.

    A cell that is not a subject or an objective class stops the read with the
    file and row named (the sheet is a user's choice; a wrong one is refused whole).
    """
    if release.objective_sheet is None:
        raise DatasetError(f"{path}: {release.title} has no separate objective-class sheet")
    try:
        sheet = read_table(path, release.objective_sheet)
    except SheetError as error:
        raise DatasetError(f"{error} (the {release.title} objective-class sheet)") from None
    classes: dict[tuple[str, str], int] = {}
    for row in sheet.rows:
        try:
            subject = canonical_subject(release.dataset, row["subject"])
            value = objective_class(row["objective"])
        except ValueError as error:
            raise DatasetError(
                f"{sheet.where}, row {row.row}: {error}; correct the cell or leave the sheet out"
            ) from None
        if value is not None:
            classes[(subject, cell_text(row["filename"]).lower())] = value
    return classes


def _record_objective(clip: Clip, cell: object, column: str,
                      objective: Mapping[tuple[str, str], int] | None, folder: str,
                      source: str | None) -> None:
    """The clip's objective class: the separate sheet's when given, else the coding sheet's cell."""
    try:
        clip.objective_class = objective_class(cell)
    except ValueError as error:
        clip.mark(clip.status, f"note: {column} cell {error}; left empty")
    if objective is None:
        return
    separate = objective.get((clip.subject, folder.lower()))
    if separate is None:
        return
    if clip.objective_class is not None and clip.objective_class != separate:
        clip.mark(clip.status, f"note: objective class {clip.objective_class} in the coding sheet, "
                               f"{separate} in {source}: {separate} used")
    clip.objective_class = separate


def read_annotated_release(
    release: AnnotatedRelease,
    root: Path | str,
    annotations: Path | str | None = None,
    objective: Path | str | None = None,
) -> list[Clip]:
    """One :class:`Clip` per spreadsheet row, in row order.

    ``annotations`` None looks for the spreadsheet beside the release.
    ``objective``: a separate objective-class sheet (CASME II), which wins over
    the coding sheet's column. Rows are never dropped: a row that cannot be
    used comes back unusable with the reason.
    """
    dataset = release.dataset
    root_path = check_root(root, release.title)
    subjects = subject_folders(release, root_path)
    if annotations is None:
        annotations = find_annotation_file(
            dataset, root_path, subjects.base, release.annotation_file, release.annotation_example
        )
    sheet = read_annotations(release, annotations)
    separate = None if objective is None else read_objective_sheet(release, objective)
    clips: list[Clip] = []
    seen: dict[tuple[str, str], int | None] = {}
    for row in sheet.rows:
        spelled = cell_text(row["emotion"])
        if release.lower_case_emotion:
            spelled = spelled.lower()
        folder_name = cell_text(row["filename"])
        clip = Clip(
            dataset=dataset,
            subject="",
            clip=f"{folder_name}/{cell_text(row['onset'])}" if release.onset_in_id else folder_name,
            emotion=spelled,
            label=composite_class(dataset, spelled) if spelled else None,
            onset_frame=None,
            apex_frame=None,
            offset_frame=None,
            source=str(sheet.path),
            row=row.row,
        )
        clips.append(clip)
        try:
            clip.subject = canonical_subject(dataset, row["subject"])
        except ValueError:
            clip.subject = cell_text(row["subject"])
            column = sheet.columns["subject"]
            clip.mark(UNUSABLE, f"{column} cell {clip.subject!r} is not a subject number; "
                                f"correct it ({release.subject_example})")
            continue
        if "objective" in sheet.columns or separate is not None:
            _record_objective(clip, row["objective"], sheet.columns.get("objective", "objective"),
                              separate, folder_name, str(objective))
        if duplicate_row(clip, seen):
            continue
        folder = locate_clip_folder(clip, subjects, row["filename"])
        if folder is not None and release.frames_folder is not None:
            folder = frames_folder(clip, subjects.base, folder, release.frames_folder)
        if folder is None:
            continue
        attach_frames(clip, folder, row["onset"], row["apex"], row["offset"], columns=sheet.columns)
        frames_inside(clip, subjects.base)
    return clips
