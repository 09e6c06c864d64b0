"""The one shared equivariance helper for every registered model (spec section 5).

Structures are small float64 random triclinic crystals with distinct species. A brute-force
periodic edge builder (radius edges with self-images removed, plus the six positive self-image
edges) and a batch constructor keep this helper independent of the dataset code.

``property_errors(model, structures)`` returns, for every layer of the model's output, the largest
absolute deviation from the law under: rotation, reflection, permutation, translation (cartesian or
fractional, as the model's laws say), wrapping an atom by a lattice vector (shift by the input or
the predicted cell), and batch versus one by one.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import torch
from torch_geometric.data import Batch, Data

from e3relax import keys
from e3relax.model_base import SymmetryLaws

SELF_IMAGE_OFFSETS = ((0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0))
PROPERTIES = ("rotation", "reflection", "permutation", "translation", "wrap", "batch")
TOLERANCE = 1e-10


@dataclass
class Structure:
    """One crystal with its graph. Shapes: pos [N, 3], cell [3, 3], z [N], edge_index [2, E],
    offsets [E, 3], edge_type [E]; optional labels pos_r [N, 3], cell_r [3, 3]."""

    pos: torch.Tensor
    cell: torch.Tensor
    z: torch.Tensor
    edge_index: torch.Tensor
    offsets: torch.Tensor
    edge_type: torch.Tensor
    pos_r: torch.Tensor | None = None
    cell_r: torch.Tensor | None = None


def build_edges(pos: torch.Tensor, cell: torch.Tensor, cutoff: float):
    """Brute-force periodic neighbours within ``cutoff`` (self-images dropped) + 6 self-image edges.

    Returns (edge_index [2, E] with row 0 = neighbour j, row 1 = centre i; offsets [E, 3]; edge_type [E]).
    """
    inv = torch.linalg.inv(cell)
    widths = 1.0 / torch.linalg.vector_norm(inv, dim=0)  # plane spacings
    reach = [int(math.ceil(cutoff / float(w))) + 1 for w in widths]
    src, dst, offs = [], [], []
    n = pos.shape[0]
    for k in itertools.product(*(range(-r, r + 1) for r in reach)):
        shift = torch.tensor(k, dtype=pos.dtype) @ cell
        d = torch.linalg.vector_norm(pos[None, :, :] + shift - pos[:, None, :], dim=-1)  # [i, j]
        for i, j in zip(*torch.nonzero(d < cutoff, as_tuple=True)):
            if int(i) != int(j):
                src.append(int(j)); dst.append(int(i)); offs.append(k)
    types = [keys.EDGE_RADIUS] * len(src)
    for i in range(n):
        for k in SELF_IMAGE_OFFSETS:
            src.append(i); dst.append(i); offs.append(k); types.append(keys.EDGE_SELF_IMAGE)
    return (torch.tensor([src, dst], dtype=torch.long), torch.tensor(offs, dtype=torch.long),
            torch.tensor(types, dtype=torch.long))


def random_structure(num_atoms: int, seed: int, cutoff: float = 4.0, labels: bool = False) -> Structure:
    """A generic triclinic cell (lengths ~4-5.5 A, skewed angles) with distinct random species."""
    g = torch.Generator().manual_seed(seed)
    cell = torch.diag(4.0 + 1.5 * torch.rand(3, generator=g, dtype=torch.float64))
    cell = cell + 0.7 * (torch.rand(3, 3, generator=g, dtype=torch.float64) - 0.5)
    frac = torch.rand(num_atoms, 3, generator=g, dtype=torch.float64)
    pos = frac @ cell
    z = torch.randperm(118, generator=g)[:num_atoms] + 1
    ei, off, et = build_edges(pos, cell, cutoff)
    s = Structure(pos, cell, z, ei, off, et)
    if labels:
        strain = torch.eye(3, dtype=torch.float64) + 0.04 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        s.cell_r = cell @ strain
        s.pos_r = (frac + 0.03 * torch.randn(num_atoms, 3, generator=g, dtype=torch.float64)) @ s.cell_r
    return s


def to_data(s: Structure) -> Data:
    """A torch-geometric ``Data`` with the fields of :mod:`e3relax.keys`."""
    d = Data()
    d[keys.POS_U], d[keys.CELL_U], d[keys.Z] = s.pos, s.cell[None], s.z
    d[keys.EDGE_INDEX], d[keys.CELL_OFFSETS], d[keys.EDGE_TYPE] = s.edge_index, s.offsets, s.edge_type
    d[keys.NATOMS] = torch.tensor([s.pos.shape[0]])
    if s.pos_r is not None:
        d[keys.POS_R], d[keys.CELL_R] = s.pos_r, s.cell_r[None]
    d.num_nodes = s.pos.shape[0]
    return d


def make_batch(structures: list[Structure]) -> Batch:
    return Batch.from_data_list([to_data(s) for s in structures])


def run(model, structures: list[Structure]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    out = model(make_batch(structures))
    return [p.detach() for p in out.pos], [c.detach() for c in out.cell]


# ----------------------------------------------------------------------------- transforms
def random_orthogonal(seed: int, det: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.sign(torch.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


def rotate(s: Structure, q: torch.Tensor) -> Structure:
    return replace(s, pos=s.pos @ q.T, cell=s.cell @ q.T)


def permute(s: Structure, perm: torch.Tensor) -> Structure:
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


# ----------------------------------------------------------------------------- checks
def _max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _atom_slices(structures: list[Structure]) -> list[slice]:
    out, start = [], 0
    for s in structures:
        out.append(slice(start, start + s.pos.shape[0]))
        start += s.pos.shape[0]
    return out


def signal(model, structures: list[Structure]) -> float:
    """Smallest (over layers) largest change of positions or cell relative to the input."""
    pos, cell = run(model, structures)
    p0 = torch.cat([s.pos for s in structures])
    c0 = torch.stack([s.cell for s in structures])
    return min(max(float((p - p0).abs().max()), float((c - c0).abs().max())) for p, c in zip(pos, cell))


def property_errors(model, structures: list[Structure], laws: SymmetryLaws, seed: int = 0) -> dict[str, float]:
    """Largest deviation from each law, over every layer's positions and cells."""
    g = torch.Generator().manual_seed(seed)
    pos, cell = run(model, structures)
    sl = _atom_slices(structures)
    bidx = torch.cat([torch.full((s.pos.shape[0],), b) for b, s in enumerate(structures)])
    errs: dict[str, float] = {}
    for name, det in (("rotation", 1.0), ("reflection", -1.0)):
        q = random_orthogonal(seed + (1 if det > 0 else 2), det)
        p2, c2 = run(model, [rotate(s, q) for s in structures])
        errs[name] = max(_max_err(p2, [p @ q.T for p in pos]), _max_err(c2, [c @ q.T for c in cell]))
    perms = [torch.randperm(s.pos.shape[0], generator=g) for s in structures]
    p2, c2 = run(model, [permute(s, pm) for s, pm in zip(structures, perms)])
    want = [torch.cat([p[x][pm] for x, pm in zip(sl, perms)]) for p in pos]
    errs["permutation"] = max(_max_err(p2, want), _max_err(c2, cell))
    shifts = 3.0 * (torch.rand(len(structures), 3, generator=g, dtype=torch.float64) - 0.5)
    p2, c2 = run(model, [replace(s, pos=s.pos + t) for s, t in zip(structures, shifts)])
    cell_u = torch.stack([s.cell for s in structures])
    if laws.translation == "fractional":
        want = [p + torch.einsum("bd,bdk->bk", shifts, torch.linalg.inv(cell_u) @ c)[bidx] for p, c in zip(pos, cell)]
    else:
        want = [p + shifts[bidx] for p in pos]
    errs["translation"] = max(_max_err(p2, want), _max_err(c2, cell))
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
    errs["wrap"] = max(_max_err(p2, want), _max_err(c2, cell))
    errb = 0.0
    for b, s in enumerate(structures):
        p1, c1 = run(model, [s])
        errb = max(errb, _max_err(p1, [p[sl[b]] for p in pos]), _max_err(c1, [c[b:b + 1] for c in cell]))
    errs["batch"] = errb
    return errs


def status(laws: SymmetryLaws, prop: str) -> str:
    """``"exact"`` (must hold), ``"broken"`` (must fail: declared in ``laws.broken``) or ``"none"``."""
    if prop in laws.broken:
        return "broken"
    promised = {
        "rotation": laws.rotation, "reflection": laws.reflection, "permutation": laws.permutation,
        "translation": laws.translation != "none", "wrap": laws.wrap != "none", "batch": True,
    }[prop]
    return "exact" if promised else "none"


def perturb_(model, scale: float = 0.2, seed: int = 0) -> None:
    """Add seeded noise to every parameter so that zero-initialised biases are generic too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
