"""What a run ran on: package versions, CPU model, torch threads, device; and determinism.

Recorded in every ``metrics.json`` (and, per fold, the device and thread count), so that a
figure can be traced to the machine and the software that produced it: the same seed gives the
same figure only on the same versions, and torch's CPU kernels differ between CPU kinds (AVX-512
and AVX2 machines) and thread counts.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import sys

import torch

#: Distributions whose versions change a run's numbers.
RECORDED_PACKAGES = ("fr-mer", "torch", "numpy", "opencv-contrib-python-headless", "dlib-bin", "h5py",
                     "scikit-learn", "scipy", "pydantic")

#: The cuBLAS setting torch's deterministic mode needs on CUDA (torch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def cpu_flags() -> str:
    """The widest x86 vector extension the CPU has (``avx512``, ``avx2``, ...), which decides torch's kernels."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    for name in ("avx512f", "avx2", "avx", "sse4_2"):
        if name in flags:
            return name.removesuffix("f")
    return "unknown"


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_name(device: torch.device | str) -> str:
    """``cpu``, or ``cuda:N (GPU name)``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def describe_environment(device: torch.device | str) -> dict[str, object]:
    """The record of ``metrics.json``'s ``environment``."""
    return {
        "packages": package_versions(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_vector_extension": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(device),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }


def set_deterministic() -> None:
    """torch's deterministic algorithms on (and cuBLAS's workspace setting they need on CUDA).

    Slower on a GPU; an operation with no deterministic implementation then raises instead of
    silently varying between runs.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
