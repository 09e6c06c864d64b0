"""Every registered model (and the E3Relax modes and ablations) through the shared equivariance helper.

A property the model promises must hold to ~1e-10 (relative to the output scale) at every layer;
a property its ``laws().broken`` declares is marked ``xfail(strict=True)`` with the recorded reason.
"""
from __future__ import annotations

import functools

import pytest
import torch

from e3relax.registry import MODELS
from e3relax.testing import (
    PROPERTIES, TOLERANCE, ModelTests, perturb_, property_errors, random_structure, signal, status,
)

#: Extra configurations beyond each model's own ``test_config()``.
VARIANTS = {
    "e3relax[paper_faithful]": ("e3relax", {"paper_faithful": True}),
    "e3relax[cartesian]": ("e3relax", {"affine_strain_positions": False}),
    "e3relax[centroid]": ("e3relax", {"lattice_atom_mode": "centroid"}),
    "e3relax[no_lattice_nodes]": ("e3relax", {"lattice_nodes": False}),
    "e3relax[no_lattice_nodes,deeprelax_head]": ("e3relax", {"lattice_nodes": False, "cell_head": "deeprelax_lattice"}),
    "e3relax[no_refinement]": ("e3relax", {"progressive": False}),
    "e3relax[no_self_image]": ("e3relax", {"self_image_edges": False}),
    "e3relax[bessel]": ("e3relax", {"rbf": "bessel_rbf"}),
}
#: every model the toolkit registers (test modules may register toy models of their own; those are skipped)
TOOLKIT_MODELS = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("e3relax.")]
CASES = {name: (name, {}) for name in TOOLKIT_MODELS}
CASES.update(VARIANTS)


@functools.lru_cache(maxsize=None)
def structures():
    return [random_structure(n, seed) for n, seed in ((4, 11), (6, 12), (5, 13))]


@functools.lru_cache(maxsize=None)
def built(case: str):
    name, overrides = CASES[case]
    cls = MODELS.get(name)
    torch.manual_seed(0)
    model = MODELS.build({"name": name, **cls.test_config(), **overrides}).double().eval()
    perturb_(model, 0.05)
    return model


@functools.lru_cache(maxsize=None)
def errors(case: str) -> dict:
    model = built(case)
    with torch.no_grad():
        return property_errors(model, structures(), model.laws())


@functools.lru_cache(maxsize=None)
def scale(case: str) -> float:
    with torch.no_grad():
        return signal(built(case), structures())


def _params():
    out = []
    for case in CASES:
        try:
            laws = built(case).laws()
        except Exception:  # reported by the test itself
            out.extend(pytest.param(case, p, id=f"{case}-{p}") for p in PROPERTIES)
            continue
        for prop in PROPERTIES:
            st = status(laws, prop)
            marks = [pytest.mark.xfail(strict=True, reason=laws.broken[prop])] if st == "broken" else []
            out.append(pytest.param(case, prop, id=f"{case}-{prop}", marks=marks))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_are_not_trivial(case):
    model = built(case)
    if not any(p.requires_grad for p in model.parameters()):
        pytest.skip(f"{case} has no parameters (identity baseline)")
    assert scale(case) > 1e4 * TOLERANCE, f"{case}: outputs barely move ({scale(case):.2e}); test would be vacuous"


@pytest.mark.parametrize("case,prop", _params())
def test_symmetry_law(case, prop):
    laws = built(case).laws()
    if status(laws, prop) == "none":
        pytest.skip(f"{case} makes no {prop} promise")
    err = errors(case)[prop]
    tol = TOLERANCE * max(1.0, scale(case))
    assert err < tol, f"{case}: {prop} error {err:.2e} (tolerance {tol:.1e}, output scale {scale(case):.2e})"


def test_paper_faithful_laws_record_measured_errors():
    laws = built("e3relax[paper_faithful]").laws()
    assert set(laws.broken) == {"rotation", "reflection", "translation", "wrap"}
    errs = errors("e3relax[paper_faithful]")
    for prop in laws.broken:
        assert errs[prop] > 1e-3, f"{prop} expected clearly broken, error {errs[prop]:.2e}"
    assert errs["permutation"] < TOLERANCE and errs["batch"] < TOLERANCE


def test_default_laws_are_the_documented_ones():
    laws = built("e3relax").laws()
    assert (laws.rotation, laws.reflection, laws.permutation) == (True, True, True)
    assert (laws.translation, laws.wrap, laws.broken) == ("fractional", "predicted_cell", {})
    cart = built("e3relax[cartesian]").laws()
    assert cart.translation == "cartesian" and set(cart.broken) == {"wrap"}


def test_every_paper_model_is_checked():
    paper = {"dummy", "e3relax", "relax_net", "painn", "egnn", "hegnn", "gotennet", "equiformer_v2", "deeprelax"}
    assert paper <= set(TOOLKIT_MODELS), f"missing from the shared symmetry test: {sorted(paper - set(TOOLKIT_MODELS))}"


class TestE3RelaxModelKit(ModelTests):
    """The shipped model mixin on E3Relax itself (laws, batching, unbatched Data, shapes, gradients, overfit)."""

    model_spec = "e3relax"


class TestPaiNNModelKit(ModelTests):
    model_spec = "painn"
