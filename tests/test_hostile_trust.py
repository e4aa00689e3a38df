"""Caches that cannot be trusted are refused, naming the samples or the run (issue 27, item 3).

Each case damages a small cache the way a crash, a second program or a careless
edit would, runs a command that reads it, and asserts exit 1, a message naming
the file and the samples (or column, or run), no traceback, and no results written.
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from fr_mer.pipeline.cache import CacheError, CacheWriter, check_finished, read_cache
from fr_mer.pipeline.cache.schema import RUN_COLUMN
from tests.cachefactory import small_composite, write_flow_cache
from tests.cli import run, refused as shared_refused


def refused(result, *names):
    shared_refused(result, 1, *names)


@pytest.fixture
def composite(tmp_path):
    return small_composite(tmp_path, subjects_per_db=1)


def command_args(command, cache, listing, out):
    if command == "probe":
        return ("probe", "--cache", cache, "--composite-list", listing, "--out", out)
    return (command, "--cache", cache, "--composite-list", listing, "--model", "ststnet", "--epochs", 1,
            "--batch-size", 16, "--threads", 1, *(("--seeds", 1) if command == "evaluate" else ()), "--out", out)


def _reopen(cache):
    """A writer on ``cache`` with its own params and columns (as a resumed preprocess opens it)."""
    stored = read_cache(cache, arrays=["flow"])
    spec = {"flow": (stored.arrays["flow"].shape[1:], "f4", stored.array_attrs["flow"])}
    from fr_mer.pipeline.cache import ArraySpec

    return CacheWriter(cache, params=stored.params,
                       arrays={name: ArraySpec(shape, dtype, attrs) for name, (shape, dtype, attrs) in spec.items()})


# -- a run that has not finished ---------------------------------------------------------------
@pytest.mark.parametrize("command", ["evaluate", "train", "probe"])
def test_a_cache_still_being_written_is_refused(composite, tmp_path, command):
    cache, listing = composite
    n = len(read_cache(cache))
    writer = _reopen(cache)
    try:
        out = tmp_path / "out"
        refused(run(*command_args(command, cache, listing, out)), cache, "still being written", f"{n} samples",
                "--allow-incomplete", "pid")
        assert not out.exists()
    finally:
        writer.close()


def test_a_cache_left_by_a_killed_writer_is_refused_then_allowed(composite, tmp_path):
    cache, listing = composite
    writer = _reopen(cache)
    writer._file.close()  # what kill -9 leaves: the run never marked finished, the lock gone with the process
    writer._lock.release()
    refused(run(*command_args("probe", cache, listing, tmp_path / "out")), cache, "left unfinished")
    result = run(*command_args("probe", cache, listing, tmp_path / "out"), "--allow-incomplete")
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "--allow-incomplete" in result.output


def test_a_finished_writer_and_an_older_cache_are_complete(composite):
    cache, _ = composite
    assert check_finished(cache) is None  # written by a with-block that ended
    with _reopen(cache):
        pass
    assert check_finished(cache) is None
    with h5py.File(cache, "a", libver="latest") as f:
        del f[RUN_COLUMN]  # a cache made before the run record existed
    assert check_finished(cache) is None


def test_an_interrupted_preprocess_is_unfinished_until_a_rerun_completes_it(tmp_path):
    from fr_mer.pipeline.preprocess import PreprocessParams, PreprocessRun, preprocess
    from fr_mer.pipeline.readers import read_database
    from tests.test_preprocess import FAST, write_face_smic

    root = tmp_path / "smic"
    write_face_smic(root, 2)
    clips = read_database("smic", root)
    cache = tmp_path / "c.h5"
    outcomes = iter(PreprocessRun(clips, cache, PreprocessParams(**FAST), jobs=1))
    next(outcomes)
    outcomes.close()  # stopped after its first sample, as by Ctrl-C
    with pytest.raises(CacheError, match=r"left unfinished.*1 samples"):
        check_finished(cache)
    preprocess(clips, cache, PreprocessParams(**FAST), jobs=1)
    assert check_finished(cache) is None


# -- content that would be trained on silently -------------------------------------------------
def _damage(cache, change):
    with h5py.File(cache, "a", libver="latest") as f:
        change(f)


def _evaluate(cache, listing, out):
    return run(*command_args("evaluate", cache, listing, out))


@pytest.mark.parametrize("value", [7, -5])
def test_labels_out_of_range_are_named(composite, tmp_path, value):
    cache, listing = composite
    key = read_cache(cache).keys[1]
    _damage(cache, lambda f: f["samples/label"].__setitem__(1, value))
    refused(_evaluate(cache, listing, tmp_path / "out"), cache, key, f"({value})")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_flow_is_named(composite, tmp_path, value):
    cache, listing = composite
    key = read_cache(cache).keys[2]

    def poison(f):
        flow = f["samples/flow"][2]
        flow[0, 3, 3] = value
        f["samples/flow"][2] = flow

    _damage(cache, poison)
    refused(_evaluate(cache, listing, tmp_path / "out"), cache, key, "NaN or infinite")
    refused(run(*command_args("probe", cache, listing, tmp_path / "probe")), key)


def test_duplicate_keys_are_named(tmp_path):
    rows = [("casme2", "sub01", "EP01", "negative"), ("casme2", "sub01", "EP01", "negative"),
            ("casme2", "sub01", "EP02", "positive")]
    cache = write_flow_cache(tmp_path / "dup.h5", rows)
    with pytest.raises(CacheError, match="casme2/sub01/EP01.*more than once|more than once.*casme2/sub01/EP01"):
        read_cache(cache)


def test_a_short_label_column_is_named(composite, tmp_path):
    cache, listing = composite
    n = len(read_cache(cache))
    _damage(cache, lambda f: f["samples/label"].resize(n - 3, axis=0))
    refused(_evaluate(cache, listing, tmp_path / "out"), cache, "samples/label", f"{n - 3} rows")


def test_a_two_channel_flow_is_named(composite, tmp_path):
    cache, listing = composite

    def two_channels(f):
        flow = f["samples/flow"][...]
        attrs = dict(f["samples/flow"].attrs)
        del f["samples/flow"]
        new = f.create_dataset("samples/flow", data=flow[:, :2], maxshape=(None, 2, *flow.shape[2:]))
        for k, v in attrs.items():
            new.attrs[k] = v

    _damage(cache, two_channels)
    refused(_evaluate(cache, listing, tmp_path / "out"), cache, "samples/flow", "2 channels")


def test_params_that_are_not_json_are_named(composite, tmp_path):
    cache, listing = composite
    _damage(cache, lambda f: f.attrs.__setitem__("params", "{not json"))
    refused(_evaluate(cache, listing, tmp_path / "out"), cache, "'params'")


# -- a sheet row that changed since its sample was cached -----------------------------------------
def test_a_sample_whose_row_changed_is_made_again_and_reported(tmp_path):
    import dataclasses

    from fr_mer.pipeline.labels import CLASS_INDEX
    from fr_mer.pipeline.preprocess import PreprocessParams, preprocess
    from fr_mer.pipeline.readers import read_database
    from tests.test_preprocess import FAST, write_face_smic

    root = tmp_path / "smic"
    write_face_smic(root, 2)
    clips = read_database("smic", root)
    cache = tmp_path / "c.h5"
    params = PreprocessParams(**FAST)
    preprocess(clips, cache, params, jobs=1)
    before = read_cache(cache)
    corrected = next(c for c in clips if c.label != "positive")
    changed = [dataclasses.replace(c, emotion="positive", label="positive") if c is corrected else c for c in clips]
    summary = preprocess(changed, cache, params, jobs=1)
    assert list(summary.remade) == [corrected.key] and "label" in summary.remade[corrected.key]
    assert summary.skipped == len(clips) - 1 and summary.done == 1
    assert any(corrected.key in line and "label" in line for line in summary.lines())
    after = read_cache(cache)
    assert sorted(after.keys) == sorted(before.keys)  # one row per sample, the stale one retired
    assert after.meta["label"][after.keys.index(corrected.key)] == CLASS_INDEX["positive"]
    again = preprocess(changed, cache, params, jobs=1)  # nothing changed since: nothing made
    assert again.remade == {} and again.done == 0


def test_a_sample_whose_apex_file_was_replaced_is_made_again(tmp_path):
    from fr_mer.pipeline.preprocess import PreprocessParams, preprocess
    from fr_mer.pipeline.readers import read_database
    from tests.test_preprocess import FAST, write_face_smic

    root = tmp_path / "smic"
    write_face_smic(root, 2)
    cache = tmp_path / "c.h5"
    params = PreprocessParams(**FAST)
    clips = read_database("smic", root)
    preprocess(clips, cache, params, jobs=1)
    first = clips[0]
    onset = first.frames[first.onset_frame]
    onset.write_bytes(first.frames[first.onset_frame + 1].read_bytes())  # a frame replaced by another
    summary = preprocess(read_database("smic", root), cache, params, jobs=1)
    assert summary.remade == {first.key: "frame files replaced"} and summary.done == 1
    assert sorted(read_cache(cache).keys) == sorted(c.key for c in clips)
