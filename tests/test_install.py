"""The installed package imports from outside the source tree; no top-level lib/models/datasets."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import e3relax

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, e3relax, e3relax.models, e3relax.datasets
spec = {m: importlib.util.find_spec(m) for m in ("lib", "models", "datasets")}
print(json.dumps({
    "file": e3relax.__file__,
    "models": e3relax.models.__file__,
    "datasets": e3relax.datasets.__file__,
    "version": e3relax.__version__,
    "toplevel": {m: (s.origin if s else None) for m, s in spec.items()},
}))
"""


def test_package_imports_from_outside_source_tree(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert Path(info["file"]).name == "__init__.py"
    assert Path(info["models"]).parent.name == "models"
    assert info["version"] == e3relax.__version__
    for name, origin in info["toplevel"].items():
        # a top-level 'datasets' may exist only if it is some other package, never our folder
        assert origin is None or not str(origin).startswith(str(ROOT)), f"top-level '{name}' leaks from the source tree"


def test_console_command_help_and_version(tmp_path):
    exe = Path(sys.executable).with_name("e3relax")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "e3relax.cli.main"]
    v = subprocess.run(cmd + ["--version"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert v.stdout.strip() == f"e3relax {e3relax.__version__}"
    h = subprocess.run(cmd + ["--help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "usage: e3relax" in h.stdout


def test_wheel_maps_folders_into_one_namespace(tmp_path):
    """Build a wheel (no deps, no isolation) and check its layout: everything under e3relax/."""
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    if res.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{res.stderr[-2000:]}")
    wheel = next(tmp_path.glob("e3relax-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"e3relax", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    assert "e3relax/models/__init__.py" in names
    assert "e3relax/datasets/__init__.py" in names
    assert "e3relax/registry.py" in names
