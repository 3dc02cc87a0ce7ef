"""Packaging (issue 26, case 9): pyproject.toml makes `analysis` and `stimuli` installable, so
`from analysis.glmm import BinomialGLMM` works from any directory without PYTHONPATH.

The install runs into a folder of the test's own (pip --target, no dependencies, no build
isolation: setuptools from the environment, so no network), from a copy of the sources, so the
checkout gains no build/ or egg-info folders; the import then runs from outside the repository."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("analysis", "stimuli")


def _package_dirs():
    """Every folder of the two libraries that holds Python modules, as a dotted name."""
    out = set()
    for lib in LIBRARIES:
        for py in (ROOT / lib).rglob("*.py"):
            if "__pycache__" not in py.parts:
                out.add(".".join(py.parent.relative_to(ROOT).parts))
    return out


def test_pyproject_covers_every_package_dir():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = conf["tool"]["setuptools"]["packages"]["find"]
    from setuptools import find_packages

    found = set(find_packages(where=str(ROOT / find.get("where", ["."])[0]),
                              include=find["include"], exclude=find.get("exclude", ())))
    expected = _package_dirs()
    assert expected <= found, f"packages not installed: {sorted(expected - found)}"
    assert found <= expected | {p for p in found if p.split(".")[0] in LIBRARIES}
    for pkg in expected:  # a folder without __init__.py is not found by find_packages
        assert (ROOT / pkg.replace(".", "/") / "__init__.py").exists(), pkg
    assert "studyapp" not in found and "tests" not in found


def test_installed_package_imports_from_outside_the_repository(tmp_path):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for lib in LIBRARIES:
        shutil.copytree(ROOT / lib, src / lib, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(src)],
        capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for lib in LIBRARIES:
        modules = {p.relative_to(ROOT / lib) for p in (ROOT / lib).rglob("*.py")
                   if "__pycache__" not in p.parts}
        installed = {p.relative_to(target / lib) for p in (target / lib).rglob("*.py")}
        assert modules <= installed, sorted(map(str, modules - installed))
    # the data files the code reads at run time travel with the modules
    schemas = {p.name for p in (ROOT / "analysis" / "schema").glob("*.json")}
    assert schemas and schemas <= {p.name for p in (target / "analysis" / "schema").glob("*.json")}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = (f"import sys; sys.path.insert(0, {str(target)!r}); "
            "from analysis.glmm import BinomialGLMM; import analysis, stimuli.config; "
            "from importlib import resources; import json; "
            "json.loads((resources.files('analysis') / 'schema' / 'results-v1.json').read_text()); "
            "print(analysis.__file__)")
    run = subprocess.run([sys.executable, "-c", code], cwd=outside, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(target / "analysis" / "__init__.py")
