"""Hostile inputs around the cache (issue 17): no lost sample, no hang, no traceback.

Each case reproduces a defect that was found: two writers on one cache, a truncated
cache, one bad clip stopping the run, malformed caches and output paths, and
preprocess workers orphaned by ``kill -9``. CLI cases assert the exit code, that
the message names the file, and that no Python traceback is printed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.pipeline.cache import KEY_WIDTH, CacheError, CacheWriter, read_cache
from fr_mer.pipeline.preprocess import PreprocessParams, preprocess
from tests.cachefactory import small_composite
from tests.test_cache import ARRAYS, PARAMS, _arrays, _meta, _write
from tests.test_preprocess import FAST, shift_clip, write_face_smic

PREPROCESS_FAST = ["--jobs", "1", "--flow-size", "64", "--head-motion", "none"]


def _cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, *names: object) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for name in names:
        assert str(name) in result.output, result.output


def _smic(tmp_path: Path, n_clips: int = 3) -> Path:
    root = tmp_path / "smic"
    write_face_smic(root, n_clips)
    return root


# -- one writer per cache --------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 2)
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as first:
        with pytest.raises(CacheError, match=rf"c\.h5.*another fr-mer.*pid {os.getpid()} on host"):
            CacheWriter(path, params=PARAMS, arrays=ARRAYS)
        first.append(_meta(5), _arrays(5))  # the holder goes on writing into the same file
    assert len(read_cache(path)) == 3
    assert not (tmp_path / "c.h5.lock").exists()
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as again:  # released: a new writer may open it
        assert len(again) == 3


def test_a_second_preprocess_on_a_held_cache_exits_1_and_loses_nothing(tmp_path):
    root, out = _smic(tmp_path), tmp_path / "c.h5"
    args = ["preprocess", "--dataset", "smic", "--root", root, "--out", out, *PREPROCESS_FAST]
    assert _cli(args).exit_code == 0
    params = read_cache(out).params
    specs = PreprocessParams.from_dict(params).array_specs()
    with CacheWriter(out, params=params, arrays=specs):  # a run still writing it
        result = _cli(args + ["--overwrite"])
        _assert_one_line_error(result, out, f"pid {os.getpid()}")
    assert len(read_cache(out)) == 3


def test_a_lock_left_by_a_dead_writer_does_not_block(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 1)
    (tmp_path / "c.h5.lock").write_text("pid 999999 on host gone\n")  # no process holds its flock
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        assert len(w) == 1


def test_a_read_only_cache_is_an_error_never_recovered(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    _write(path, 2)
    before = path.stat().st_ino
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path and mode == os.W_OK
                        else real_access(p, mode))
    with pytest.raises(CacheError, match=r"c\.h5.*read-only"):
        CacheWriter(path, params=PARAMS, arrays=ARRAYS)
    assert path.stat().st_ino == before and len(read_cache(path)) == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_a_chmod_444_cache_is_refused_by_preprocess(tmp_path):
    root, out = _smic(tmp_path), tmp_path / "c.h5"
    args = ["preprocess", "--dataset", "smic", "--root", root, "--out", out, *PREPROCESS_FAST]
    assert _cli(args).exit_code == 0
    out.chmod(0o444)
    before = out.stat().st_ino
    _assert_one_line_error(_cli(args), out, "read-only")
    assert out.stat().st_ino == before


# -- a truncated cache -----------------------------------------------------------------

def _truncated(tmp_path: Path) -> Path:
    good = tmp_path / "good.h5"
    _write(good, 40)
    half = tmp_path / "half.h5"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # `head -c`
    return half


def test_a_truncated_cache_is_refused_within_seconds(tmp_path):
    half = _truncated(tmp_path)
    start = time.monotonic()
    with pytest.raises(CacheError, match=r"damaged or still being written: .*half\.h5"):
        read_cache(half)
    with pytest.raises(CacheError, match=r"damaged or still being written: .*half\.h5"):
        CacheWriter(half, params=PARAMS, arrays=ARRAYS)
    assert time.monotonic() - start < 30
    assert half.stat().st_size == (tmp_path / "good.h5").stat().st_size // 2  # not "recovered"


def test_train_on_a_truncated_cache_exits_1_in_a_subprocess(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    half = tmp_path / "half.h5"
    half.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    done = subprocess.run(
        [sys.executable, "-m", "fr_mer.cli", "evaluate", "--cache", str(half), "--model", "ststnet",
         "--composite-list", str(listing), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "damaged or still being written" in done.stderr and "half.h5" in done.stderr
    assert "Traceback" not in done.stderr


# -- one bad clip fails only itself ----------------------------------------------------

def test_a_frame_number_over_int32_and_a_long_clip_id_fail_only_their_samples(tmp_path):
    good = [shift_clip(tmp_path / "a", 1.0, subject=f"sub0{i}") for i in (1, 2)]
    huge = shift_clip(tmp_path / "b", 1.0, subject="sub03")
    offset = 2**31  # image99999999999.bmp: a frame number no int32 holds
    huge.frames = {n + offset: p for n, p in huge.frames.items()}
    huge.onset_frame += offset
    huge.apex_frame += offset
    huge.offset_frame += offset
    long_id = shift_clip(tmp_path / "c", 1.0, subject="s" * (KEY_WIDTH - 10), name="EP01_01")
    assert len(long_id.key.encode()) > KEY_WIDTH
    out = tmp_path / "c.h5"
    summary = preprocess([huge, long_id, *good], out, PreprocessParams(**FAST), jobs=1)
    assert summary.done == 2 and set(summary.failed) == {huge.key, long_id.key}
    assert "onset_frame" in summary.failed[huge.key] and "int32" in summary.failed[huge.key]
    cache = read_cache(out)
    assert sorted(cache.keys) == sorted(c.key for c in good)
    assert "onset_frame" in cache.failures[huge.key]
    recorded = [k for k in cache.failures if k != huge.key]
    assert len(recorded) == 1 and long_id.key.startswith(recorded[0])
    assert long_id.key in cache.failures[recorded[0]]  # the reason keeps the whole key
    again = preprocess([huge, long_id, *good], out, PreprocessParams(**FAST), jobs=1)  # every rerun
    assert again.skipped == 2 and len(again.failed) == 2


def test_a_refused_sample_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        w.append(_meta(1), _arrays(1))
        with pytest.raises(CacheError, match="apex_frame"):
            w.append(_meta(2, apex_frame=2**40), _arrays(2))
        w.append(_meta(3), _arrays(3))
    with h5py.File(path, "r") as f:
        assert {f["samples"][name].shape[0] for name in f["samples"]} == {2}
    np.testing.assert_array_equal(read_cache(path, arrays=["flow"]).arrays["flow"][1], _arrays(3)["flow"])


# -- malformed caches and output paths -------------------------------------------------

@pytest.mark.parametrize("column", ["samples/label", "samples/key", "failures/reason"])
def test_a_cache_missing_a_column_is_named(tmp_path, column):
    path = tmp_path / "c.h5"
    _write(path, 2)
    with h5py.File(path, "a") as f:
        del f[column]
    with pytest.raises(CacheError, match=rf"c\.h5.*lacks {column}"):
        read_cache(path)
    with pytest.raises(CacheError, match=rf"c\.h5.*lacks {column}"):
        CacheWriter(path, params=PARAMS, arrays=ARRAYS)


def test_evaluate_on_a_cache_missing_labels_exits_1(tmp_path):
    cache, listing = small_composite(tmp_path, subjects_per_db=1)
    with h5py.File(cache, "a") as f:
        del f["samples/label"]
    result = _cli(["evaluate", "--cache", cache, "--model", "ststnet", "--composite-list", listing,
                   "--out", tmp_path / "o"])
    _assert_one_line_error(result, cache, "samples/label")


def test_a_schema_version_that_is_not_a_number_is_named(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 1)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = "two"
    with pytest.raises(CacheError, match=r"c\.h5.*schema_version 'two'"):
        read_cache(path)
    with pytest.raises(CacheError, match=r"c\.h5.*schema_version 'two'"):
        CacheWriter(path, params=PARAMS, arrays=ARRAYS)


def test_a_folder_as_cache_is_named(tmp_path):
    folder = tmp_path / "folder.h5"
    folder.mkdir()
    with pytest.raises(CacheError, match=r"folder\.h5.*is a folder"):
        read_cache(folder)
    with pytest.raises(CacheError, match=r"folder\.h5.*is a folder"):
        CacheWriter(folder, params=PARAMS, arrays=ARRAYS)


def test_preprocess_out_under_a_file_or_a_foreign_file_exits_1(tmp_path):
    root = _smic(tmp_path, 1)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    base = ["preprocess", "--dataset", "smic", "--root", root, *PREPROCESS_FAST, "--out"]
    _assert_one_line_error(_cli(base + [a_file / "c.h5"]), a_file, "is a file")
    _assert_one_line_error(_cli(base + [a_file]), a_file)  # an existing file that is no cache
    assert a_file.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder modes")
def test_preprocess_out_in_a_read_only_folder_exits_1(tmp_path):
    root = _smic(tmp_path, 1)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    result = _cli(["preprocess", "--dataset", "smic", "--root", root, *PREPROCESS_FAST, "--out", folder / "c.h5"])
    _assert_one_line_error(result, folder)


def test_preprocess_out_a_folder_is_a_usage_error(tmp_path):
    root = _smic(tmp_path, 1)
    result = _cli(["preprocess", "--dataset", "smic", "--root", root, *PREPROCESS_FAST, "--out", tmp_path])
    assert result.exit_code == 2 and "Traceback" not in result.output


# -- orphaned workers --------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_workers_exit_when_preprocess_is_killed(tmp_path):
    root, out = _smic(tmp_path, 8), tmp_path / "c.h5"
    command = [sys.executable, "-m", "fr_mer.cli", "preprocess", "--dataset", "smic", "--root", str(root),
               "--out", str(out), "--jobs", "2", "--flow-size", "64", "--head-motion", "none"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        workers: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(read_cache(out)) >= 1:
                    workers = _children(proc.pid)
                    break
            except CacheError:
                pass
            time.sleep(0.05)
        assert proc.poll() is None and workers, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(read_cache(out)) >= 1  # the finished samples are kept
