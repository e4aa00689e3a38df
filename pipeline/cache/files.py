"""The cache file on disk: its one-writer lock, and the checks made before HDF5 opens it.

Two rules keep a cache whole when runs collide or files are damaged:

- **One writer per cache.** A writer holds an exclusive ``flock`` on the lock file
  beside the cache (``c.h5.lock``, holding the writer's pid and host) for as long as
  it is open. A second writer is refused with a message naming the holder. The
  kernel drops the lock when its holder dies, even by ``kill -9``, so a lock that
  can be taken means no live writer: only then may a crashed writer's file be
  repaired. (``flock`` is not reliable on every network file system; there the
  holder's pid and host in the lock file are what a user can check.)
- **No open of a file HDF5 could hang on.** In SWMR mode HDF5 retries a read that
  fails its checksum for a long time, so a truncated file (a partial copy, a full
  disk) made readers sleep for minutes. :func:`check_complete` compares the file's
  size with the end-of-file address in its superblock first and waits only a
  moment for a writer that is still extending it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from fr_mer.errors import FrMerError

#: HDF5's file signature, and the superblock versions (``libver="latest"`` writes 3)
#: whose end-of-file address :func:`check_complete` knows where to find.
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SUPERBLOCKS_WITH_EOF = (2, 3)

#: Seconds :func:`check_complete` waits for a file shorter than its header says.
COMPLETE_WAIT_SECONDS = 2.0


class CacheError(FrMerError, ValueError):
    """A cache that cannot be used as asked (locked, damaged, read-only, other params); the message says
    what to do. Defined here, beneath :mod:`pipeline.cache`, which exports it."""


class CacheParamsError(CacheError):
    """An existing cache made with other params: ``stored`` (its record) and ``differ`` (the keys that differ)."""

    def __init__(self, message: str, stored: dict, differ: list[str]) -> None:
        super().__init__(message)
        self.stored, self.differ = stored, differ


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


class WriterLock:
    """The exclusive lock of one cache's writer; :meth:`release` (or process death) frees it."""

    def __init__(self, cache: str | Path) -> None:
        self.cache = Path(cache)
        self.path = lock_path(self.cache)
        self._fd: int | None = None
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CacheError(
                    f"{self.cache}: cannot create the writer lock {self.path} ({exc.strerror}); "
                    "write the cache into a folder you can write to (another --out)"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise CacheError(
                    f"{self.cache}: another fr-mer is writing this cache ({holder or 'holder unknown'}, "
                    f"lock {self.path}); wait for it to finish, or write to another --out"
                ) from None
            # The file may have been released and removed between our open and our
            # flock: then this lock guards nothing, so take the new file's.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
            self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.path.unlink()  # while still held, so no one else's lock is removed
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def check_complete(path: str | Path, wait: float = COMPLETE_WAIT_SECONDS) -> None:
    """Raise :class:`CacheError` when ``path`` is shorter than its HDF5 superblock says.

    A file still being extended by its writer gets ``wait`` seconds to catch up.
    Files that are not HDF5, or whose superblock version records no end-of-file
    address, are left to HDF5's own checks.
    """
    path = Path(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, "rb") as handle:
                head = handle.read(48)
                size = os.fstat(handle.fileno()).st_size
        except IsADirectoryError:
            raise CacheError(f"{path}: is a folder, not a cache file; pass the .h5 file") from None
        if head[:8] != _SIGNATURE or head[8] not in _SUPERBLOCKS_WITH_EOF:
            return
        offsets = head[9]
        start = 12 + 2 * offsets  # base address, superblock extension address, end-of-file address
        end_of_file = int.from_bytes(head[start:start + offsets], "little")
        if size >= end_of_file:
            return
        if time.monotonic() >= deadline:
            raise CacheError(
                f"the cache is damaged or still being written: {path} holds {size} bytes, its header says "
                f"{end_of_file}; if no fr-mer is writing it, make it again with `fr-mer preprocess` "
                "(a copy may have been cut short)"
            )
        time.sleep(0.1)


def writer_alive(cache: str | Path) -> bool:
    """Whether a live process holds the writer lock of ``cache`` (a shared lock cannot be taken)."""
    path = lock_path(Path(cache))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def check_replaceable(path: Path) -> None:
    """Raise :class:`CacheError` unless ``path`` is an fr-mer cache, or an HDF5 file too damaged to tell
    (a killed or cut-short writer's): ``--overwrite`` replaces a cache, never a spreadsheet, an image, another
    program's HDF5 file or a user's other file."""
    import h5py  # here only: the checks above run before HDF5 opens a file

    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SIGNATURE))
    except OSError as exc:
        raise CacheError(f"{path}: cannot be read ({exc.strerror}); choose another --out") from None
    if head != _SIGNATURE:
        raise CacheError(f"{path}: not an HDF5 cache, so --overwrite leaves it alone; choose another --out")
    try:
        check_complete(path, wait=0.0)
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            ours = "schema_version" in f.attrs and "samples" in f
    except (CacheError, OSError):
        return  # damaged: replacing it is what --overwrite is for
    if not ours:
        raise CacheError(f"{path}: an HDF5 file that is not an fr-mer cache (no schema_version), so --overwrite "
                         "leaves it alone; choose another --out")


def check_writable(path: Path) -> None:
    """Raise :class:`CacheError` when the cache at ``path`` is read-only for this process."""
    if not os.access(path, os.W_OK):
        raise CacheError(
            f"{path}: the cache is read-only (permission denied); make it writable (chmod u+w) "
            "or write to another --out"
        )


def open_for_reading(path: Path):
    """``path`` opened read-only in SWMR mode (a writer may be appending), once no half-made file is
    in the way (:func:`check_complete`); :class:`CacheError` naming the file when HDF5 cannot read it."""
    import h5py

    check_complete(path)
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 cache ({exc})") from None
