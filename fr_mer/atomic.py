"""Atomic file writes: a temporary file of its own in the target's folder, then a rename.

Every writer gets a temporary name no other process or thread uses
(``.NAME.<pid>-<random>.tmp`` beside ``NAME``), so two runs writing the same file
at once never write into, or rename, each other's temporary file: each rename
(``os.replace``) puts a whole file in place and the last one wins. A reader sees
the old file or a new one, never a part. :func:`create_text` is the exclusive
form: the first writer's file stays and the others learn that it exists.

The temporary file is created with ``open(..., "x")``, so it takes the usual
permissions (the umask), unlike :func:`tempfile.mkstemp`'s 0600.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path, suffix: str = ".tmp") -> Path:
    """A name beside ``path`` that no other writer uses (hidden; ends with ``suffix``)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """``with atomic_path(p) as tmp: write(tmp)``: ``tmp`` replaces ``p`` when the block ends.

    ``tmp`` exists (empty) when the block starts; ``suffix`` is its ending, for
    writers that add their own (``numpy.savez`` wants ``.npz``). The folder is
    created. If the block raises, ``tmp`` is deleted and ``p`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    with open(tmp, "xb"):
        pass
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; a concurrent writer's whole file or this one remains."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def create_text(path: str | Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless ``path`` exists; False when it did (nothing written).

    Of several processes creating one file at once exactly one succeeds; the
    others get False and can read the winner's whole file. On a file system
    without hard links the file is put in place with ``os.replace`` (then the
    last of simultaneous writers wins, and every one gets True).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FAT file systems)
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)
