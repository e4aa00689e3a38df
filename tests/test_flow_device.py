"""``fr-mer preprocess --flow-device``: OpenCV's TV-L1 in the workers, or the torch port batched in the run's process.

A tiny synthetic SMIC set (``fr-mer synth``: 3 clips) is preprocessed at 64 px
with the default (``opencv``) and with ``--flow-device cpu`` (two batches: 2 pairs,
then 1). The tolerance on the cached u, v comes from docs/tvl1-torch.md: the two
implementations differ by float rounding amplified by TV-L1, a mean end-point
error under the issue's bound of 0.05 px (measured 0.0003-0.015 px), and the
cached u, v are box averages (INTER_AREA) of the flow, whose mean absolute
difference cannot exceed the flow's mean EPE. On this set a sample's flow differs
from every other sample's by more than that bound, so a pair given another pair's
flow (a batching mistake) fails the test.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from fr_mer.cli import main
from fr_mer.errors import ParameterError
from fr_mer.pipeline.cache import CacheError, CacheWriter, read_cache
from fr_mer.pipeline.flow import flow_implementation
from fr_mer.pipeline.preprocess import PreprocessParams, PreprocessRun, finish_clip, preprocess, process_clip
from fr_mer.pipeline.preprocess.params import PARAM_OPTIONS, PARAMS_ADDED
from fr_mer.pipeline.scan import scan

#: docs/tvl1-torch.md: mean EPE of the torch flow against OpenCV's, at most (the issue's bound).
MEAN_EPE_BOUND = 0.05

#: Small and quick: 64 px flow crops, raw pixels (no min-max scaling) so u, v compare in px.
SMALL = ["--flow-size", "64", "--normalisation", "none", "--feature-size", "16"]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 3-clip SMIC-HS set written by ``fr-mer synth``, and the preprocess arguments that read it."""
    root = tmp_path_factory.mktemp("flowdev") / "smic"
    result = CliRunner().invoke(main, ["synth", "--out", str(root), "--layout", "smic", "--subjects", "1",
                                       "--clips-per-subject", "3", "--amplitude", "3"])
    assert result.exit_code == 0, result.output
    return root, ["preprocess", "--dataset", "smic", "--root", str(root), *SMALL]


@pytest.fixture(scope="module")
def two_caches(synthetic):
    """The set preprocessed with OpenCV and with the torch port on the CPU (batches of 2: a full one, then one pair)."""
    import torch

    root, args = synthetic
    threads = torch.get_num_threads()
    runner = CliRunner()
    opencv = root.parent / "opencv.h5"
    result = runner.invoke(main, [*args, "--out", str(opencv), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    cpu = root.parent / "torch-cpu.h5"
    result = runner.invoke(main, [*args, "--out", str(cpu), "--jobs", "1", "--flow-device", "cpu",
                                  "--flow-batch", "2", "--flow-threads", "1"])
    assert result.exit_code == 0, result.output
    assert "3 done" in result.output and "0 failed" in result.output
    assert "TV-L1 in torch on cpu, 2 pairs at a time" in result.output
    assert torch.get_num_threads() == threads  # --flow-threads holds for the run only
    return opencv, cpu


def test_torch_flows_agree_with_opencvs_within_the_documented_bound(two_caches):
    opencv, cpu = (read_cache(path, arrays=["flow", "onset_face", "landmarks"]) for path in two_caches)
    assert sorted(opencv.keys) == sorted(cpu.keys) and len(opencv) == 3
    order = [cpu.keys.index(key) for key in opencv.keys]
    a, b = opencv.arrays["flow"][:, :2], cpu.arrays["flow"][order][:, :2]
    assert np.abs(a).mean() > 0.03  # the synthetic clips move: there is a flow to compare
    own = np.abs(a - b).mean(axis=(1, 2, 3))
    assert (own < MEAN_EPE_BOUND).all(), own
    for i in range(len(a)):  # the bound tells a sample's own flow from another sample's
        others = [np.abs(a[i] - b[j]).mean() for j in range(len(b)) if j != i]
        assert min(others) > MEAN_EPE_BOUND, (own, others)
    # everything before the flow is the same computation in both
    np.testing.assert_array_equal(cpu.arrays["onset_face"][order], opencv.arrays["onset_face"])
    np.testing.assert_array_equal(cpu.arrays["landmarks"][order], opencv.arrays["landmarks"])
    assert [cpu.meta["flags"][i] for i in order] == opencv.meta["flags"]


def test_the_cache_records_the_implementation_and_refuses_the_other(synthetic, two_caches):
    _, args = synthetic
    opencv, cpu = two_caches
    assert read_cache(opencv).params["flow_implementation"] == "opencv"
    assert read_cache(cpu).params["flow_implementation"] == "torch"
    runner = CliRunner()
    for path, other in ((opencv, "cpu"), (cpu, "opencv")):
        result = runner.invoke(main, [*args, "--out", str(path), "--jobs", "1", "--flow-device", other])
        assert result.exit_code == 1, result.output
        assert "flow_implementation" in result.output and "--flow-device" in result.output
        assert "--overwrite" in result.output
    # the same choice completes the cache: nothing to make
    result = runner.invoke(main, [*args, "--out", str(cpu), "--jobs", "1", "--flow-device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "0 done, 3 skipped" in result.output


def test_a_deferred_flow_gives_the_sample_process_clip_makes(synthetic, two_caches, one_torch_thread):
    root, _ = synthetic
    clip = scan("smic", root=root).clips[0]
    params = PreprocessParams(flow_size=64, normalisation="none", feature_size=16, flow_implementation="torch")
    direct = process_clip(clip, params)
    deferred = process_clip(clip, params, defer_flow=True)
    assert "flow" not in deferred.arrays and deferred.pending is not None and direct.pending is None
    finished = finish_clip(deferred, np.zeros((64, 64, 2), np.float32), params)
    assert np.abs(finished.arrays["flow"][:2]).max() == 0  # the flow given is the flow used
    cached = read_cache(two_caches[1], arrays=["flow"])
    np.testing.assert_allclose(cached.arrays["flow"][cached.keys.index(clip.key)], direct.arrays["flow"], atol=1e-5)
    assert direct.meta == {**deferred.meta, "flags": direct.meta["flags"]}
    with pytest.raises(ValueError, match="finished already"):
        finish_clip(direct, np.zeros((64, 64, 2), np.float32), params)


def test_flow_threads_hold_while_the_run_iterates(synthetic, tmp_path):
    import torch

    root, _ = synthetic
    clip = scan("smic", root=root).clips[0]
    params = PreprocessParams(flow_size=64, feature_size=16, flow_implementation="torch")
    before, seen = torch.get_num_threads(), []
    summary = preprocess([clip], tmp_path / "c.h5", params, jobs=1, flow_threads=1,
                         progress=lambda outcome: seen.append(torch.get_num_threads()))
    assert summary.done == 1 and seen == [1] and torch.get_num_threads() == before


@pytest.mark.skipif(cuda_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_is_refused_before_any_file_changes(synthetic, tmp_path):
    _, args = synthetic
    out = tmp_path / "cuda.h5"
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--jobs", "1", "--flow-device", "cuda"])
    assert result.exit_code == 1, result.output
    assert "--flow-device cuda" in result.output and "no CUDA device" in result.output
    assert not out.exists()
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--flow-device", "auto"])
    assert result.exit_code == 2 and "auto" in result.output


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
def test_cuda_flows_agree_with_the_cpu_ones(synthetic, two_caches, tmp_path):
    _, args = synthetic
    out = tmp_path / "cuda.h5"
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--jobs", "1", "--flow-device", "cuda"])
    assert result.exit_code == 0, result.output
    cuda, cpu = read_cache(out, arrays=["flow"]), read_cache(two_caches[1], arrays=["flow"])
    assert cuda.params == cpu.params  # the device is not recorded: it changes only rounding
    order = [cpu.keys.index(key) for key in cuda.keys]
    difference = np.abs(cuda.arrays["flow"][:, :2] - cpu.arrays["flow"][order][:, :2]).mean(axis=(1, 2, 3))
    assert (difference < MEAN_EPE_BOUND).all(), difference


def test_library_checks_of_the_flow_device(tmp_path):
    assert [flow_implementation(d) for d in ("opencv", "cpu", "cuda")] == ["opencv", "torch", "torch"]
    with pytest.raises(ValueError, match="auto"):
        flow_implementation("auto")
    with pytest.raises(ValueError, match="flow implementation"):
        PreprocessParams(flow_implementation="farneback")
    opencv = PreprocessParams(flow_size=64)
    with pytest.raises(ParameterError, match="torch TV-L1"):
        PreprocessRun([], tmp_path / "a.h5", opencv, flow_device="cpu")
    with pytest.raises(ParameterError, match="median_filtering"):  # a size neither implementation can run
        dataclasses.replace(opencv.tvl1, median_filtering=7)
    initial = dataclasses.replace(opencv.tvl1, use_initial_flow=True)
    unsupported = PreprocessParams(flow_implementation="torch", tvl1=initial)
    with pytest.raises(ParameterError, match="use_initial_flow"):  # a setting the torch port cannot run
        PreprocessRun([], tmp_path / "b.h5", unsupported)
    with pytest.raises(ParameterError, match="flow_batch"):
        PreprocessRun([], tmp_path / "c.h5", opencv, flow_batch=0)
    with pytest.raises(ParameterError, match="flow_threads"):
        PreprocessRun([], tmp_path / "d.h5", opencv, flow_threads=0)
    assert not any(tmp_path.iterdir())
    assert PreprocessParams.from_dict({k: v for k, v in opencv.as_dict().items()
                                       if k != "flow_implementation"}) == opencv


def test_a_cache_recorded_before_the_flow_implementation_resumes_as_opencv(tmp_path):
    """Caches made before the param existed were OpenCV's: they resume with the default and refuse torch."""
    from fr_mer.pipeline.cache import ArraySpec

    arrays = {"x": ArraySpec((2,), "float32", {})}
    old = {"flow_size": 64}
    path = tmp_path / "old.h5"
    with CacheWriter(path, params=old, arrays=arrays):
        pass
    with CacheWriter(path, params={**old, **PARAMS_ADDED}, arrays=arrays, params_added=PARAMS_ADDED):
        pass
    with pytest.raises(CacheError, match="flow_implementation 'opencv' in the cache, 'torch' now") as error:
        CacheWriter(path, params={**old, "flow_implementation": "torch"}, arrays=arrays,
                    params_added=PARAMS_ADDED, options=PARAM_OPTIONS)
    assert "--flow-device" in str(error.value)
    assert set(PARAM_OPTIONS) == set(PreprocessParams().as_dict())  # every recorded param names its option
