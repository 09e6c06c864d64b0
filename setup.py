"""Install the E3Relax toolkit as one distribution, ``e3relax``.

The source folders map onto one import namespace:
``lib/ -> e3relax``, ``models/ -> e3relax.models``, ``datasets/ -> e3relax.datasets``.
No top-level ``lib``, ``models`` or ``datasets`` module is installed.
"""
from __future__ import annotations

import os
import re

from setuptools import setup


def _subpackages(root: str, prefix: str) -> dict[str, str]:
    """Map every package folder below ``root`` to its dotted name under ``prefix``."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        if "__init__.py" not in files or "__pycache__" in folder:
            continue
        rel = os.path.relpath(folder, root)
        name = prefix if rel == "." else prefix + "." + rel.replace(os.sep, ".")
        out[name] = folder.replace(os.sep, "/")
    return out


def _version() -> str:
    with open(os.path.join("lib", "version.py"), encoding="utf-8") as fh:
        return re.search(r'__version__\s*=\s*"([^"]+)"', fh.read()).group(1)


PACKAGE_DIR = {}
PACKAGE_DIR.update(_subpackages("lib", "e3relax"))
PACKAGE_DIR.update(_subpackages("models", "e3relax.models"))
PACKAGE_DIR.update(_subpackages("datasets", "e3relax.datasets"))

setup(
    name="e3relax",
    version=_version(),
    description="Equivariant one-shot crystal structure relaxation (E3Relax) and its baselines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=sorted(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={
        "e3relax.datasets": ["builtin/*.lmdb", "builtin/*.md", "builtin/*.json", "builtin/*.npz", "builtin/*.gz"],
        "e3relax": ["pretrained/*.pt", "pretrained/*.md", "pretrained/*.json", "pretrained/*.png"],
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        "numpy",
        "scipy",
        "e3nn>=0.5",
        "torch-geometric>=2.4",
        "pymatgen",
        "ase>=3.22",
        "spglib",
        "vesin",
        "lmdb",
        "pytorch-ignite>=0.5",
        "tensorboard",
        "pyyaml",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "setuptools>=70.1"],
        "chgnet": ["chgnet"],
    },
    entry_points={"console_scripts": ["e3relax = e3relax.cli.main:main"]},
)
