"""The stage folders install inside the copyjob namespace, and pyproject names every package folder."""

from __future__ import annotations

import subprocess
import sys
import tomllib
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
