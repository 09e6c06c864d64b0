"""Every registered model (and the E3Relax variants of the shared symmetry test), through the
:class:`~e3relax.predict.Relaxer` path in float64: another lattice basis (a' = a + b, a random
unimodular change) or another origin gives the same predicted crystal to 1e-5 A.

The crystals are P1 (no projection): one in a generic triclinic cell, one in a cubic lattice, whose
many equivalent reduced bases the canonical frame must choose among by the atoms alone.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from ase import Atoms

from e3relax.predict import Relaxer
from e3relax.testing.frames import FRAME_LAWS, frame_law_errors
from test_equivariance_models import CASES, built

TOL = 1e-5


def crystals() -> dict[str, Atoms]:
    rng = np.random.default_rng(21)
    tri = np.diag(rng.uniform(4.0, 5.0, 3)) + rng.uniform(-0.6, 0.6, (3, 3))
    return {
        "triclinic": Atoms(numbers=[3, 8, 14, 26], scaled_positions=rng.random((4, 3)), cell=tri, pbc=True),
        "cubic_lattice": Atoms(numbers=[11, 17, 29], scaled_positions=rng.random((3, 3)), cell=4.2 * np.eye(3),
                               pbc=True),
    }


@functools.lru_cache(maxsize=None)
def relaxer(case: str, canonical: bool = True) -> Relaxer:
    model = built(case)
    graph = {"name": "periodic_multi_edge", "cutoff": 4.5, **(model.graph_requirement() or {})}
    return Relaxer([model], graph, dtype=torch.float64, canonical=canonical)


@functools.lru_cache(maxsize=None)
def errors(case: str, crystal: str, canonical: bool = True) -> dict[str, float]:
    with torch.no_grad():
        return frame_law_errors(relaxer(case, canonical), crystals()[crystal], seed=4)


@pytest.mark.parametrize("crystal", ["triclinic", "cubic_lattice"])
@pytest.mark.parametrize("case", list(CASES))
def test_basis_and_origin_laws(case, crystal):
    err = errors(case, crystal)
    bad = {k: f"{v:.1e}" for k, v in err.items() if not v < TOL}
    assert not bad, f"{case} on the {crystal} crystal: {bad} A (tolerance {TOL:g})"


def test_without_the_canonical_frame_e3relax_depends_on_the_basis():
    err = errors("e3relax", "triclinic", canonical=False)
    assert err["basis_a+b"] > 1e-3 and err["basis_unimodular"] > 1e-3, err
    assert set(err) == set(FRAME_LAWS)
