"""The built wheel installs one top-level name, ``fr_mer``; ``pipeline/`` arrives as ``fr_mer.pipeline``.

Built from a copy of the tracked sources (so a stale ``build/`` in the checkout cannot leak into
it) with the test environment's setuptools, no network.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the wheel tests below run on 3.10 too

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "fr_mer", "pipeline")


def _source_packages() -> set[str]:
    names = set()
    for package, folder in {"fr_mer": ROOT / "fr_mer", "fr_mer.pipeline": ROOT / "pipeline"}.items():
        for init in folder.rglob("__init__.py"):
            names.add(".".join([package, *init.parent.relative_to(folder).parts]))
    return names


def test_pyproject_lists_every_package_of_the_tree():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"fr_mer": "fr_mer", "fr_mer.pipeline": "pipeline"}
    listed = set(config["packages"])
    assert _source_packages() <= listed, f"add to pyproject.toml packages: {sorted(_source_packages() - listed)}"


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = work / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist),
         str(src)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{build.stdout}\n{build.stderr}")
    (wheel,) = dist.glob("fr_mer-*.whl")
    target = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _run_isolated(site: Path, code: str) -> subprocess.CompletedProcess:
    # -I: no user site, no PYTHONPATH, no current folder; then only the unpacked wheel and the
    # environment's dependencies (torch, numpy, ...) are importable.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    prelude = f"import sys; sys.path[:0] = {[str(site)]!r} + {deps!r}; "
    return subprocess.run([sys.executable, "-I", "-c", prelude + code], capture_output=True, text=True,
                          cwd=site.parent)


def test_wheel_has_one_top_level_name(installed_wheel):
    top = {p.name for p in installed_wheel.iterdir() if not p.name.endswith((".dist-info", ".data"))}
    assert top == {"fr_mer"}
    assert (installed_wheel / "fr_mer" / "pipeline" / "data" / "combined_3class_gt.csv").is_file()


def test_fr_mer_pipeline_imports_and_pipeline_does_not(installed_wheel):
    ok = _run_isolated(installed_wheel, "import fr_mer.pipeline.cache, fr_mer.pipeline.composite as c; "
                                        "print(c.official_list_path()); print(fr_mer.pipeline.cache.__file__)")
    assert ok.returncode == 0, ok.stderr
    assert str(installed_wheel) in ok.stdout
    missing = _run_isolated(installed_wheel, "import pipeline")
    assert missing.returncode != 0
    assert "No module named 'pipeline'" in missing.stderr


def test_every_module_of_the_wheel_imports(installed_wheel):
    modules = sorted(
        ".".join(p.relative_to(installed_wheel).with_suffix("").parts).removesuffix(".__init__")
        for p in (installed_wheel / "fr_mer").rglob("*.py"))
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint(len(%r))" % (modules, modules)
    result = _run_isolated(installed_wheel, code)
    assert result.returncode == 0, result.stderr
