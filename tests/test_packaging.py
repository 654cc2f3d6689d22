"""The stage folders install inside the copyjob namespace, and pyproject names every package folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
STAGES = ("apply", "connectors", "ingest", "offsets", "snapshot")


def _package_folders() -> set[str]:
    found = set()
    for top in ("copyjob", *STAGES):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(rel if top == "copyjob" else ("copyjob", *rel)))
    return found


def test_pyproject_lists_every_package_folder() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setuptools["packages"]) == _package_folders()
    assert {f"copyjob.{s}": s for s in STAGES}.items() <= setuptools["package-dir"].items()


def test_nothing_generic_is_importable_at_the_top(tmp_path: Path) -> None:
    # from a folder other than the repository, only the copyjob namespace is installed
    code = ("import importlib.util as u, copyjob.apply, copyjob.ingest, copyjob.offsets, copyjob.snapshot, "
            f"copyjob.connectors; print([n for n in {STAGES!r} if u.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_wheel_carries_the_monitor_page(tmp_path: Path) -> None:
    """An installed copyjob serves its monitor page: the files in copyjob/monitor/static are package data."""
    source = tmp_path / "src"  # a copy: building in the work tree would leave build/ in it
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in ("copyjob", *STAGES):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    [wheel] = (tmp_path / "dist").glob("copyjob-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = {f"copyjob/monitor/static/{f.name}" for f in (ROOT / "copyjob" / "monitor" / "static").iterdir()}
    assert {"copyjob/monitor/static/index.html", "copyjob/monitor/static/monitor.js"} <= static
    assert static <= names, static - names
