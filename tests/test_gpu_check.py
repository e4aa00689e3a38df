"""benchmarks/gpu_check.sh, the GPU session's script, runs end to end in its tiny CPU mode (so it does not rot)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="the script needs bash and coreutils' timeout")
def test_gpu_check_runs_every_step_in_its_tiny_mode(tmp_path):
    out = tmp_path / "gpu-check"
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", str(out)],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    for name in ("environment", "synthetic-cache", "fold-stack", "tvl1", "cuda-tests"):
        assert f"{name}: exit 0" in summary, summary
    record = json.loads((out / "fold_stack" / "fold_stack.json").read_text())
    assert record["model"] == "fr" and record["folds"] == 3 and len(record["stacked"]) == 1
    assert list(out.glob("tvl1_torch-*.json"))
    collected = (out / "cuda-tests.log").read_text()
    # the CUDA tests are still there, under the names the script selects
    for name in ("test_training_runs_on_cuda", "test_stack_on_cuda_matches_the_cpu",
                 "test_each_stacked_fold_trains_as_that_fold_alone_on_cuda", "test_cuda_gives_the_cpu_flow",
                 "test_cuda_flows_agree_with_the_cpu_ones"):
        assert name in collected, collected
