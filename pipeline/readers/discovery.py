"""Finding a release on disk: its subject folders, its clip folders and its annotation file.

Nothing here reads a spreadsheet cell's meaning or decides a repair; it only
says where things are, refusing any path that would leave the release.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from fr_mer.errors import FrMerError
from fr_mer.pipeline.clips import UNUSABLE, Clip, UnsafePathError, safe_join
from fr_mer.pipeline.labels import DATABASE_TITLES
from fr_mer.pipeline.xlsx import cell_text

#: How deep below ``--root`` the subject folders may sit (archives nest).
MAX_DEPTH = 6

#: Folders never searched: macOS archive debris and version-control folders.
_SKIP_FOLDERS = {"__macosx", ".git", ".svn", "$recycle.bin"}


class DatasetError(FrMerError, ValueError):
    """A root or annotation file that cannot be used at all; the message names it and what to do."""


class DatasetNotFoundError(DatasetError):
    """No subject folders of the database under the root given."""


@dataclasses.dataclass
class SubjectFolders:
    """The folder holding a release's subject folders, and those folders by canonical id."""

    base: Path
    subjects: dict[str, Path]


_NUMBERS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering numbers by value (``s2`` before ``s10``, ``img46`` before ``img100``)."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBERS.split(name))


def check_root(root: Path | str, title: str) -> Path:
    """The root as a resolved folder; DatasetError when it is missing or a file."""
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: folder not found; check the {title} root you gave")
    if not path.is_dir():
        raise DatasetError(
            f"{path}: is a file, not a folder; give the folder that holds the {title} release"
        )
    return Path(os.path.realpath(path))


# Tests of what a subject folder holds: a folder of the right name is a subject
# folder only if it passes the release's test (so ``sub01`` debris is not one).


def has_subfolder(folder: Path) -> bool:
    """The folder holds at least one folder (CASME II: ``sub01/EP02_01f``)."""
    try:
        return any(p.is_dir() for p in folder.iterdir())
    except OSError:
        return False


def holds_folders_named_after_it(folder: Path) -> bool:
    """The folder holds a folder named ``<its name>_...`` (SAMM: ``006/006_1_2``)."""
    prefix = f"{folder.name}_"
    try:
        return any(p.is_dir() and p.name.startswith(prefix) for p in folder.iterdir())
    except OSError:
        return False


def holds_micro(folder: Path) -> bool:
    """The folder holds a ``micro`` folder (SMIC-HS: ``s1/micro``)."""
    try:
        return any(p.is_dir() and p.name.lower() == "micro" for p in folder.iterdir())
    except OSError:
        return False


def holds_folder_with(name: str) -> Callable[[Path], bool]:
    """A test: the folder holds a folder that holds ``name`` (CAS(ME)^3: ``spNO.1/b/color``)."""
    def test(folder: Path) -> bool:
        try:
            return any(p.is_dir() and child_folder(p, name) is not None for p in folder.iterdir())
        except OSError:
            return False

    test.__doc__ = f"The folder holds a folder that holds a {name!r} folder."
    return test


def inside(base: Path, path: Path) -> bool:
    """Whether ``path``, its links resolved, lies in ``base`` (its links resolved too)."""
    base, resolved = Path(os.path.realpath(base)), Path(os.path.realpath(path))
    return resolved == base or base in resolved.parents


def find_subject_folders(
    root: Path | str,
    dataset: str,
    *,
    pattern: re.Pattern[str],
    canonical: Callable[[str], str],
    accept: Callable[[Path], bool],
    example: str,
    skip: Iterable[str] = (),
    prefer: str | None = None,
) -> SubjectFolders:
    """Find the subject folders of a release anywhere below ``root`` (at most MAX_DEPTH levels).

    Archives nest (``Cropped/Cropped/sub01``) and hold junk, so no depth is assumed:
    every folder whose name matches ``pattern`` and passes ``accept`` is a subject
    folder, and the search does not enter it. Folders named in ``skip`` (lower
    case) are not entered. When subject folders sit in more than one place, those
    under a folder named ``prefer`` win (SMIC's ``HS``); if several places remain
    the root is ambiguous and an error asks for one of them.
    """
    title = DATABASE_TITLES[dataset]
    root = check_root(root, title)
    skip = {s.lower() for s in skip} | _SKIP_FOLDERS
    groups: dict[Path, list[Path]] = {}

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            name = child.name
            if name.startswith(".") or name.lower() in skip:
                continue
            if pattern.fullmatch(name) and accept(child):
                # A subject folder that links out of the root is still found, so each of
                # its clips is refused by name (locate_clip_folder) instead of vanishing.
                groups.setdefault(folder, []).append(child)
            elif depth < MAX_DEPTH and inside(root, child):
                # The search never follows a link out of the root the user named.
                walk(child, depth + 1)

    walk(root, 0)
    if not groups:
        raise DatasetNotFoundError(
            f"{root}: no {title} subject folders ({example}) found within {MAX_DEPTH} levels; "
            f"point the root at the {title} release folder (the one that holds the subject "
            "folders) or at any folder above it"
        )
    if prefer is not None and len(groups) > 1:
        preferred = {
            base: found
            for base, found in groups.items()
            if prefer.lower() in (part.lower() for part in base.relative_to(root).parts)
            or base.name.lower() == prefer.lower()
        }
        groups = preferred or groups
    if len(groups) > 1:
        places = "; ".join(
            f"{base} ({len(found)} subjects)" for base, found in sorted(groups.items())
        )
        raise DatasetError(
            f"{root}: {title} subject folders found in more than one place: {places}; "
            "point the root at one of them"
        )
    base, found = next(iter(groups.items()))
    subjects: dict[str, Path] = {}
    for folder in sorted(found, key=lambda p: natural_key(p.name)):
        try:
            subject = canonical(folder.name)
        except ValueError as error:  # sub12345: named like a subject, a number no subject id has
            raise DatasetError(
                f"{folder}: named like a {title} subject folder, but {error.args[0].split(': ', 1)[-1]}; "
                "rename it or move it out of the release"
            ) from None
        subjects.setdefault(subject, folder)
    return SubjectFolders(base=base, subjects=subjects)


def find_annotation_file(
    dataset: str,
    root: Path,
    base: Path,
    pattern: re.Pattern[str],
    example: str,
) -> Path:
    """The annotation spreadsheet beside the release: from ``base`` up to ``root``'s parent.

    Users keep it beside the frames folder (``CASME2/CASME2-coding-20140508.xlsx``
    next to ``CASME2/CASME2_RAW_selected``), so every folder on the way from the
    subject folders' parent up to one above the root given is looked at (not
    their subfolders). In one folder, the last name in sort order wins: the
    newer CASME II coding file (20190701) over the older one.
    """
    title = DATABASE_TITLES[dataset]
    folders: list[Path] = []
    folder = base
    stop = root.parent
    while True:
        folders.append(folder)
        if folder == stop or folder.parent == folder:
            break
        folder = folder.parent
    for folder in folders:
        try:
            names = sorted(
                p for p in folder.iterdir()
                if p.is_file() and pattern.search(p.name) and not p.name.startswith(("~$", "."))
            )
        except OSError:
            continue
        if names:
            return names[-1]
    raise DatasetError(
        f"no {title} annotation file ({example}) found in {base} or the folders above it up to "
        f"{stop}; give its path (fr-mer: --annotations)"
    )


def child_folder(parent: Path, name: str) -> Path | None:
    """``parent/name`` when it is a folder; else the one folder whose name matches ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    try:
        matches = [p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    except OSError:
        return None
    return matches[0] if len(matches) == 1 else None


#: The longest file or folder name the file systems fr-mer runs on take (NAME_MAX), in bytes.
MAX_NAME_BYTES = 255


def clip_folder_name(value: object) -> str:
    """The clip folder a Filename cell names; UnsafePathError for anything but a plain name."""
    name = cell_text(value)
    if not name:
        raise UnsafePathError("the Filename cell is empty")
    if name in (".", "..") or "/" in name or "\\" in name or (len(name) > 1 and name[1] == ":"):
        raise UnsafePathError(f"Filename {name!r} is not a plain folder name (refused)")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UnsafePathError(f"the Filename cell holds {len(name.encode('utf-8'))} bytes ({name[:24]}...), longer "
                              f"than a folder name may be ({MAX_NAME_BYTES}); correct the cell")
    return name


def locate_clip_folder(clip: Clip, subjects: SubjectFolders, name_cell: object) -> Path | None:
    """The clip folder a row names, inside the release; else the clip is marked unusable."""
    title = DATABASE_TITLES[clip.dataset]
    try:
        name = clip_folder_name(name_cell)
    except UnsafePathError as error:
        clip.mark(UNUSABLE, str(error))
        return None
    subject_folder = subjects.subjects.get(clip.subject)
    if subject_folder is None:
        clip.mark(UNUSABLE, f"subject folder of {clip.subject} not found in {subjects.base}")
        return None
    folder = child_folder(subject_folder, name)
    if folder is None:
        clip.mark(UNUSABLE,
                  f"clip folder {subject_folder.name}/{name} not found in {subjects.base}")
        return None
    try:
        # A symbolic link inside the release must not lead out of it.
        return safe_join(subjects.base, subject_folder.name, folder.name)
    except UnsafePathError as error:
        clip.mark(UNUSABLE, f"{title} clip folder refused: {error}")
        return None


def frames_folder(clip: Clip, base: Path, folder: Path, name: str) -> Path | None:
    """The folder ``name`` inside a clip folder (CAS(ME)^3's ``color``), inside the release;
    else the clip is marked unusable."""
    found = child_folder(folder, name)
    if found is None:
        clip.mark(UNUSABLE, f"clip folder {folder} holds no {name} folder (the frames)")
        return None
    if not inside(base, found):
        clip.mark(UNUSABLE, f"{DATABASE_TITLES[clip.dataset]} frames folder refused: {found} "
                            f"leaves the dataset root {Path(os.path.realpath(base))}")
        return None
    return Path(os.path.realpath(found))


def frames_inside(clip: Clip, base: Path) -> None:
    """Unusable when a frame file is a link leading out of the release (never followed)."""
    for path in clip.frames.values():
        if not inside(base, path):
            clip.mark(UNUSABLE, f"frame file {path} is a link leading outside the dataset root "
                                f"{Path(os.path.realpath(base))}; refused: replace the link by "
                                "the file itself")
            return


def unannotated_folders(subjects: SubjectFolders, clips: Iterable[Clip],
                        folder_of: Callable[[str], str] = str) -> list[str]:
    """``subject/clip`` folders on disk that no row names.

    ``folder_of``: the clip folder a clip id names (the id itself, or CAS(ME)^3's
    task letter of ``j/28``). The real CASME II release has two: sub09/EP02_02f
    and sub24/EP02_07.
    """
    named = {(c.subject, folder_of(c.clip).lower()) for c in clips}
    found = []
    for subject, folder in subjects.subjects.items():
        try:
            children = sorted((p for p in folder.iterdir() if p.is_dir()),
                              key=lambda p: natural_key(p.name))
        except OSError:
            continue
        for child in children:
            if not child.name.startswith(".") and (subject, child.name.lower()) not in named:
                found.append(f"{folder.name}/{child.name}")
    return found
