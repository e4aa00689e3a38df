"""The HDF5 cache (pipeline/cache.py): layout, resume, refusals, and crash safety.

The crash tests kill real processes with SIGKILL: a bare writer loop (any moment of
an append), a torn append reproduced column by column, and a real
``fr-mer preprocess`` run that is killed mid-run and then resumed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from fr_mer.pipeline.cache import (
    META_COLUMNS,
    SCHEMA_VERSION,
    ArraySpec,
    CacheError,
    CacheWriter,
    read_cache,
)

ARRAYS = {
    "flow": ArraySpec((3, 4, 4), "float32", {"channels": "u,v,strain", "normalisation": "none"}),
    "onset_face": ArraySpec((8, 8), "uint8", {"units": "gray levels"}),
}
PARAMS = {"flow_size": 64, "tvl1": {"tau": 0.25}}


def _meta(i: int, **extra: object) -> dict:
    meta = {
        "key": f"casme2/sub{i:02d}/EP0{i}_01",
        "database": "casme2",
        "subject": f"sub{i:02d}",
        "clip": f"EP0{i}_01",
        "emotion": "happiness",
        "label": 1,
        "onset_frame": 10 + i,
        "apex_frame": 20 + i,
        "offset_frame": 30 + i,
    }
    meta.update(extra)
    return meta


def _arrays(i: int) -> dict:
    return {
        "flow": np.full((3, 4, 4), i, np.float32),
        "onset_face": np.full((8, 8), i, np.uint8),
    }


def _write(path: Path, n: int, params=PARAMS, **kwargs) -> None:
    with CacheWriter(path, params=params, arrays=ARRAYS, software={"fr-mer": "test"}, **kwargs) as w:
        for i in range(n):
            w.append(_meta(i), _arrays(i))


def test_round_trip_meta_arrays_and_attributes(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS, software={"numpy": np.__version__}) as w:
        w.append(_meta(1, flags=["face_fallback_apex", "apex_repaired"]), _arrays(1))
        w.append(_meta(2, label=None, emotion="others"), _arrays(2))
        assert len(w) == 2
        assert w.done_keys() == {"casme2/sub01/EP01_01", "casme2/sub02/EP02_01"}
    cache = read_cache(path, arrays=["flow", "onset_face"])
    assert cache.schema_version == SCHEMA_VERSION
    assert cache.params == PARAMS
    assert cache.software == {"numpy": np.__version__}
    assert cache.keys == ["casme2/sub01/EP01_01", "casme2/sub02/EP02_01"]
    assert cache.meta["label"] == [1, -1]  # None is stored as "no composite class"
    assert cache.meta["onset_frame"] == [11, 12]
    assert cache.meta["flags"] == ["apex_repaired,face_fallback_apex", ""]  # sorted, joined
    assert set(cache.meta) == set(META_COLUMNS)
    assert cache.arrays["flow"].shape == (2, 3, 4, 4) and cache.arrays["flow"].dtype == np.float32
    np.testing.assert_array_equal(cache.arrays["onset_face"][1], np.full((8, 8), 2, np.uint8))
    assert cache.array_attrs["flow"]["channels"] == "u,v,strain"
    assert cache.available_arrays == ("flow", "onset_face")


def test_resume_appends_and_reports_done_keys(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 2)
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        assert w.done_keys() == {_meta(0)["key"], _meta(1)["key"]}
        w.append(_meta(2), _arrays(2))
    cache = read_cache(path, arrays=["flow"])
    assert len(cache) == 3
    assert [float(f[0, 0, 0]) for f in cache.arrays["flow"]] == [0.0, 1.0, 2.0]
    # params are stored as canonical JSON: key order does not make them differ
    with CacheWriter(path, params={"tvl1": {"tau": 0.25}, "flow_size": 64}, arrays=ARRAYS) as w:
        assert len(w) == 3


def test_other_params_are_refused_naming_the_difference(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 1)
    with pytest.raises(CacheError, match=r"flow_size.*--overwrite"):
        CacheWriter(path, params={**PARAMS, "flow_size": 128}, arrays=ARRAYS)
    with pytest.raises(CacheError, match="tvl1"):
        CacheWriter(path, params={**PARAMS, "tvl1": {"tau": 0.1}}, arrays=ARRAYS)
    # refused, not touched
    assert len(read_cache(path)) == 1
    with CacheWriter(path, params={**PARAMS, "flow_size": 128}, arrays=ARRAYS, overwrite=True) as w:
        assert len(w) == 0
    assert read_cache(path).params["flow_size"] == 128


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "c.h5"
    _write(path, 1)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(CacheError, match="schema version"):
        read_cache(path)
    with pytest.raises(CacheError, match="schema version"):
        CacheWriter(path, params=PARAMS, arrays=ARRAYS)


def test_version_2_cache_serves_its_flow_but_not_its_shifted_crops(tmp_path):
    """Schema 2 stored the crops 0.25 px off the flow crop: its flow is still read, the rest refused."""
    path = tmp_path / "c.h5"
    _write(path, 2)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 2
    cache = read_cache(path, arrays=["flow"])
    assert cache.schema_version == 2 and len(cache) == 2
    with pytest.raises(CacheError, match=r"c\.h5.*version 2.*onset_face.*shifted.*new --out"):
        read_cache(path, arrays=["flow", "onset_face"])
    with pytest.raises(CacheError, match=r"c\.h5.*version 2.*shifted.*new --out"):
        CacheWriter(path, params=PARAMS, arrays=ARRAYS)
    assert len(read_cache(path)) == 2  # refused, not touched


def test_long_reasons_are_cut_at_a_character_boundary(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        w.append_failure("k", "x" + "é" * 400)  # 801 bytes: the cut falls inside a character
    reason = read_cache(path).failures["k"]
    assert reason.startswith("xé") and len(reason.encode()) <= 512


def test_bad_samples_and_bad_files_are_refused_with_messages(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        with pytest.raises(CacheError, match="shape"):
            w.append(_meta(1), {**_arrays(1), "flow": np.zeros((3, 5, 5), np.float32)})
        with pytest.raises(CacheError, match="missing"):
            w.append(_meta(1), {"flow": _arrays(1)["flow"]})
        with pytest.raises(CacheError, match="longer than"):
            w.append(_meta(1, clip="x" * 65), _arrays(1))
    with pytest.raises(CacheError, match="no such cache"):
        read_cache(tmp_path / "absent.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        read_cache(tmp_path / "junk.h5")
    with pytest.raises(CacheError, match="clip_frames"):
        read_cache(path, arrays=["clip_frames"])
    with pytest.raises(CacheError, match="lacks columns"):
        CacheWriter(path, params=PARAMS, arrays={**ARRAYS, "apex_face": ArraySpec((8, 8), "uint8")})


def test_failures_are_kept_until_the_sample_is_done(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        w.append_failure(_meta(1)["key"], "img12.jpg: truncated image")
        w.append_failure("samm/006/006_1_2", "no face found")
    assert read_cache(path).failures == {
        _meta(1)["key"]: "img12.jpg: truncated image",
        "samm/006/006_1_2": "no face found",
    }
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:  # the user fixed the image
        w.append(_meta(1), _arrays(1))
    assert read_cache(path).failures == {"samm/006/006_1_2": "no face found"}


def test_require_labels(tmp_path):
    path = tmp_path / "c.h5"
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        w.append(_meta(1), _arrays(1))
        w.append(_meta(2, label=-1), _arrays(2))
    with pytest.raises(CacheError, match="without a composite label"):
        read_cache(path, require_labels=True)


def test_torn_append_is_truncated_to_the_committed_rows(tmp_path):
    """A kill between an array column's resize and the key's: the row is not committed."""
    path = tmp_path / "c.h5"
    _write(path, 3)
    with h5py.File(path, "a", libver="latest") as f:
        for name in ("flow", "onset_face", "label"):  # every column but key grew
            f["samples"][name].resize(4, axis=0)
        f["failures/reason"].resize(1, axis=0)
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        assert len(w) == 3
        w.append(_meta(3), _arrays(3))
    cache = read_cache(path, arrays=["flow", "onset_face"])
    assert len(cache) == 4 and cache.failures == {}
    with h5py.File(path, "r") as f:
        assert {f["samples"][name].shape[0] for name in f["samples"]} == {4}
    np.testing.assert_array_equal(cache.arrays["flow"][3], _arrays(3)["flow"])


_WRITER_LOOP = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_cache import ARRAYS, PARAMS, _arrays, _meta
    from fr_mer.pipeline.cache import CacheWriter
    with CacheWriter(sys.argv[1], params=PARAMS, arrays=ARRAYS) as w:
        i = len(w)
        while True:
            w.append(_meta(i % 90, key=f"k{{i}}"), _arrays(i % 90))
            print(i, flush=True)
            i += 1
    """
)


def _run_writer_until(path: Path, rows: int) -> None:
    script = _WRITER_LOOP.format(tests=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(rows):
            assert proc.stdout.readline(), "the writer died on its own"
        os.kill(proc.pid, signal.SIGKILL)  # somewhere inside the next appends
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_of_a_writer_leaves_a_cache_that_opens_and_resumes(tmp_path):
    path = tmp_path / "c.h5"
    _run_writer_until(path, 25)
    cache = read_cache(path, arrays=["flow", "onset_face"])  # opens as it was left
    n = len(cache)
    assert n >= 25  # every printed row was committed
    assert cache.keys == [f"k{i}" for i in range(n)]
    for i in range(n):
        assert cache.arrays["flow"][i, 0, 0, 0] == i % 90
    # a second writer repairs the file and goes on where the first stopped
    _run_writer_until(path, 5)
    cache = read_cache(path, arrays=["flow"])
    assert len(cache) >= n + 5
    assert cache.keys == [f"k{i}" for i in range(len(cache))]
    with CacheWriter(path, params=PARAMS, arrays=ARRAYS) as w:
        assert len(w) == len(cache)
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["params"]) == PARAMS
        assert len({f["samples"][name].shape[0] for name in f["samples"]}) == 1


def test_sigkill_of_fr_mer_preprocess_then_rerun_completes(tmp_path):
    """kill -9 a real `fr-mer preprocess` mid-run: the cache opens, the rerun makes only the rest."""
    from tests.test_preprocess import write_face_smic

    root, out = tmp_path / "smic", tmp_path / "cache.h5"
    n_clips = 10
    write_face_smic(root, n_clips)
    command = [sys.executable, "-m", "fr_mer.cli", "preprocess", "--dataset", "smic", "--root", str(root),
               "--out", str(out), "--jobs", "1", "--flow-size", "64", "--head-motion", "none"]
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if len(read_cache(out)) >= 2:
                        break
                except CacheError:  # not created yet
                    pass
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "log").read_text()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None and time.monotonic() > deadline:
                proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    killed = read_cache(out, arrays=["flow"])  # opens as the kill left it
    n = len(killed)
    assert 2 <= n < n_clips and len(set(killed.keys)) == n

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{n_clips - n} done, {n} skipped" in rerun.stdout
    final = read_cache(out, arrays=["flow"])
    assert len(final) == n_clips and len(set(final.keys)) == n_clips
    assert final.keys[:n] == killed.keys  # the samples made before the kill were kept, not redone
    np.testing.assert_array_equal(final.arrays["flow"][:n], killed.arrays["flow"])
    assert final.failures == {}
