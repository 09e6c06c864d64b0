"""Symmetry laws of a whole model, checked in float64 at every layer of its output.

:func:`property_layer_errors` returns, for every layer of the model's output, the largest absolute
deviation from the law under: rotation, reflection, permutation, translation (cartesian or
fractional, as the model's laws say), wrapping an atom by a lattice vector (shift by the input or
the predicted cell), and batch versus one by one. :func:`assert_relax_laws` compares these with
what ``model.laws()`` (a :class:`~e3relax.model_base.SymmetryLaws`) promises and declares broken.
Only the model's public surface is used: ``forward(batch) -> RelaxOutput``, ``laws()`` and
``parameters()``.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch

from e3relax.model_base import SymmetryLaws
from e3relax.testing.structures import Structure, default_structures, make_batch

__all__ = ["PROPERTIES", "TOLERANCE", "run", "random_orthogonal", "rotate", "permute", "wrap", "signal",
           "property_layer_errors", "property_errors", "status", "perturb_", "assert_relax_laws"]

PROPERTIES = ("rotation", "reflection", "permutation", "translation", "wrap", "batch")
#: default tolerance, relative to ``max(1, output scale)``, for float64 checks
TOLERANCE = 1e-10


def run(model: torch.nn.Module, structures: Sequence[Structure]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per-layer positions [N, 3] and cells [B, 3, 3] of ``model`` on one batch of ``structures``."""
    out = model(make_batch(list(structures)))
    return [p.detach() for p in out.pos], [c.detach() for c in out.cell]


# ----------------------------------------------------------------------------- transforms
def random_orthogonal(seed: int, det: float) -> torch.Tensor:
    """A seeded random 3x3 orthogonal matrix (float64) with determinant ``det`` (+1 or -1)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.sign(torch.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


def rotate(s: Structure, q: torch.Tensor) -> Structure:
    """``s`` with positions and lattice vectors mapped by ``x -> q x``."""
    return replace(s, pos=s.pos @ q.T, cell=s.cell @ q.T)


def permute(s: Structure, perm: torch.Tensor) -> Structure:
    """``s`` with atom ``k`` of the result being atom ``perm[k]`` of ``s`` (edges relabelled)."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return replace(s, pos=s.pos[perm], z=s.z[perm], edge_index=inv[s.edge_index])


def wrap(s: Structure, atom: int, n: torch.Tensor) -> Structure:
    """Move ``atom`` by ``n @ cell``; edges from it get ``k - n``, edges into it ``k + n``."""
    pos = s.pos.clone()
    pos[atom] = pos[atom] + n.to(pos.dtype) @ s.cell
    off = s.offsets.clone()
    off[s.edge_index[0] == atom] -= n
    off[s.edge_index[1] == atom] += n
    return replace(s, pos=pos, offsets=off)


# ----------------------------------------------------------------------------- errors
def _layer_errors(a_pos, a_cell, b_pos, b_cell) -> list[float]:
    return [max(float((p - q).abs().max()), float((c - d).abs().max()))
            for p, c, q, d in zip(a_pos, a_cell, b_pos, b_cell)]


def _atom_slices(structures: Sequence[Structure]) -> list[slice]:
    out, start = [], 0
    for s in structures:
        out.append(slice(start, start + s.pos.shape[0]))
        start += s.pos.shape[0]
    return out


def signal(model: torch.nn.Module, structures: Sequence[Structure]) -> float:
    """Smallest (over layers) largest change of positions or cell relative to the input."""
    pos, cell = run(model, structures)
    p0 = torch.cat([s.pos for s in structures])
    c0 = torch.stack([s.cell for s in structures])
    return min(max(float((p - p0).abs().max()), float((c - c0).abs().max())) for p, c in zip(pos, cell))


def property_layer_errors(model: torch.nn.Module, structures: Sequence[Structure], laws: SymmetryLaws,
                          seed: int = 0) -> dict[str, list[float]]:
    """Per property of :data:`PROPERTIES`, the largest deviation from its law at each output layer."""
    g = torch.Generator().manual_seed(seed)
    pos, cell = run(model, structures)
    sl = _atom_slices(structures)
    bidx = torch.cat([torch.full((s.pos.shape[0],), b) for b, s in enumerate(structures)])
    errs: dict[str, list[float]] = {}
    for name, det in (("rotation", 1.0), ("reflection", -1.0)):
        q = random_orthogonal(seed + (1 if det > 0 else 2), det)
        p2, c2 = run(model, [rotate(s, q) for s in structures])
        errs[name] = _layer_errors(p2, c2, [p @ q.T for p in pos], [c @ q.T for c in cell])
    perms = [torch.randperm(s.pos.shape[0], generator=g) for s in structures]
    p2, c2 = run(model, [permute(s, pm) for s, pm in zip(structures, perms)])
    want = [torch.cat([p[x][pm] for x, pm in zip(sl, perms)]) for p in pos]
    errs["permutation"] = _layer_errors(p2, c2, want, cell)
    shifts = 3.0 * (torch.rand(len(structures), 3, generator=g, dtype=torch.float64) - 0.5)
    p2, c2 = run(model, [replace(s, pos=s.pos + t) for s, t in zip(structures, shifts)])
    cell_u = torch.stack([s.cell for s in structures])
    if laws.translation == "fractional":
        want = [p + torch.einsum("bd,bdk->bk", shifts, torch.linalg.inv(cell_u) @ c)[bidx] for p, c in zip(pos, cell)]
    else:
        want = [p + shifts[bidx] for p in pos]
    errs["translation"] = _layer_errors(p2, c2, want, cell)
    ns = [torch.randint(-2, 3, (3,), generator=g) for _ in structures]
    atoms = [int(torch.randint(0, s.pos.shape[0], (1,), generator=g)) for s in structures]
    p2, c2 = run(model, [wrap(s, a, n) for s, a, n in zip(structures, atoms, ns)])
    want = []
    for p, c in zip(pos, cell):
        w = p.clone()
        for b, (x, a, n) in enumerate(zip(sl, atoms, ns)):
            basis = c[b] if laws.wrap == "predicted_cell" else cell_u[b]
            w[x.start + a] += n.to(w.dtype) @ basis
        want.append(w)
    errs["wrap"] = _layer_errors(p2, c2, want, cell)
    errb = [0.0] * len(pos)
    for b, s in enumerate(structures):
        p1, c1 = run(model, [s])
        one = _layer_errors(p1, c1, [p[sl[b]] for p in pos], [c[b:b + 1] for c in cell])
        errb = [max(x, y) for x, y in zip(errb, one)]
    errs["batch"] = errb
    return errs


def property_errors(model: torch.nn.Module, structures: Sequence[Structure], laws: SymmetryLaws,
                    seed: int = 0) -> dict[str, float]:
    """Largest deviation from each law, over every layer's positions and cells."""
    return {k: max(v) for k, v in property_layer_errors(model, structures, laws, seed).items()}


def status(laws: SymmetryLaws, prop: str) -> str:
    """``"exact"`` (must hold), ``"broken"`` (must fail: declared in ``laws.broken``) or ``"none"``."""
    if prop in laws.broken:
        return "broken"
    promised = {
        "rotation": laws.rotation, "reflection": laws.reflection, "permutation": laws.permutation,
        "translation": laws.translation != "none", "wrap": laws.wrap != "none", "batch": True,
    }[prop]
    return "exact" if promised else "none"


def perturb_(model: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> None:
    """Add seeded noise to every parameter so that zero-initialised weights and biases are generic too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))


# ----------------------------------------------------------------------------- assertion
def assert_relax_laws(model: torch.nn.Module, structures: Sequence[Structure] | None = None,
                      tol: float = TOLERANCE, *, perturb: float = 0.05, seed: int = 0,
                      strict_broken: bool = True) -> dict[str, list[float]]:
    """Assert that ``model`` obeys, at every layer, exactly the symmetry laws ``model.laws()`` declares.

    The check runs on a float64 copy of ``model`` in eval mode (the model itself is not changed).
    Every promised property must hold to ``tol * max(1, scale)``, with ``scale`` the smallest
    per-layer change of the output from the input; with ``strict_broken`` every property in
    ``laws().broken`` must really fail somewhere (a stale declaration is an error too).

    Args:
        model: a :class:`~e3relax.model_base.RelaxModel` (or any module with ``laws()`` and
            ``forward(batch) -> RelaxOutput``).
        structures: test crystals (default: :func:`~e3relax.testing.structures.default_structures`).
        tol: relative tolerance.
        perturb: scale of seeded noise added to the copy's parameters first, so that zero-initialised
            last projections (a model that starts at its input) do not make the check vacuous;
            0 checks the weights as given.
        seed: seed of the perturbation and of the random transforms.
        strict_broken: also require that each declared-broken property is measurably broken.

    Returns:
        The per-layer errors of every property (see :func:`property_layer_errors`).

    Raises:
        AssertionError: naming the model, each failing property, the layer and the error.
    """
    name = type(model).__name__
    model = copy.deepcopy(model).double().eval()
    if perturb:
        perturb_(model, perturb, seed)
    laws = model.laws()
    structures = list(default_structures() if structures is None else structures)
    with torch.no_grad():
        scale = signal(model, structures)
        errors = property_layer_errors(model, structures, laws, seed)
    limit = tol * max(1.0, scale)
    if any(p.requires_grad for p in model.parameters()) and scale <= 1e4 * tol:
        raise AssertionError(f"{name}: outputs barely move from the input (largest change {scale:.2e}), so the "
                             "symmetry check would be vacuous; pass perturb > 0 or a model with generic weights")
    failures = []
    for prop in PROPERTIES:
        st, errs = status(laws, prop), errors[prop]
        if st == "exact":
            failures += [f"{prop} law violated at layer {t}: error {e:.2e} > tolerance {limit:.1e}"
                         for t, e in enumerate(errs) if not e < limit]
        elif st == "broken" and strict_broken and max(errs) < limit:
            failures.append(f"{prop} is declared broken ({laws.broken[prop]}) but holds at every layer "
                            f"(largest error {max(errs):.2e} < {limit:.1e}); remove it from laws().broken")
    if failures:
        raise AssertionError(f"{name} (output scale {scale:.2e}): " + "; ".join(failures))
    return errors
