"""Projection of a prediction onto the space group of its input.

A DFT relaxation with symmetry on (VASP's ISYM) or an ML-potential relaxation under ASE's
``FixSymmetry`` keeps the input's space group. A one-shot prediction does not by itself, so each
predicted layer is averaged over the input's symmetry operations, found by spglib at ``symprec``:

- cell: with rows as lattice vectors and integer rotations ``W`` acting on column fractional
  coordinates, the metric ``G = L_hat L_hat^T`` is averaged as ``G_sym = mean_g W_g^T G W_g``; the
  symmetric cell is the one with metric ``G_sym`` reached from the input cell ``L`` without a rigid
  rotation: ``L_sym = L P`` with ``P`` symmetric positive definite, ``P^2 = L^-1 G_sym L^-T`` (the
  polar convention the relaxed labels are stored in). It commutes with rotating the input, keeps
  the handedness of the cell, and, unlike the nearest cell of that metric, is itself invariant
  under every rotation of the space group, so two bases of the input related by one of its
  symmetries give the same answer;
- positions: the fractional displacement ``d_i = x_hat_i - x_i`` (``x_hat`` in the predicted cell,
  ``x`` in the input cell, no wrapping) is averaged as ``d_sym[p_g(i)] += W_g d_i / |G|``, where
  ``p_g(i)`` is the atom onto which op ``g`` maps atom ``i`` (the scatter form of ASE's
  ``symmetrize_rank1``); the output is ``x + d_sym`` in the symmetric cell.

Both averages are exact for any deformation, so the projection is idempotent. A structure whose
only operation is the identity is returned as it is (the same arrays).

One implementation serves prediction and training: :func:`project_batch` works on torch tensors
of a whole batch (:class:`BatchOps` flattens the operations of its structures) and is
differentiable, the square root being Newton-Schulz iterations (``eigh``'s backward is singular at
the repeated eigenvalues every symmetric cell has). :func:`project` and :func:`symmetric_cell` are
its one-structure numpy form.
"""
from __future__ import annotations

import logging
import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from e3relax.errors import InputError

__all__ = ["DEFAULT_SYMPREC", "SymmetryOps", "BatchOps", "check_symprec", "spglib_dataset", "find_operations",
           "spd_sqrt", "project_batch", "symmetric_cell", "project", "project_layers"]

log = logging.getLogger(__name__)

#: default symmetry tolerance (A), as ASE's ``FixSymmetry`` and pymatgen's ``SpacegroupAnalyzer``
DEFAULT_SYMPREC = 0.01


def check_symprec(symprec: float, what: str = "symprec") -> float:
    """``symprec`` as a float; an :class:`~e3relax.errors.InputError` naming it when it is not > 0."""
    try:
        value = float(symprec)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number of Angstrom, got {symprec!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number of Angstrom (e.g. {DEFAULT_SYMPREC}), got {symprec!r}")
    return value


@dataclass
class SymmetryOps:
    """Space-group operations of one structure and the atom map of each.

    Shapes:
        rotations: [G, 3, 3] integer, acting on column fractional coordinates (``x' = W x + w``);
        translations: [G, 3]; perm: [G, N], ``perm[g, i]`` = the atom onto which op ``g`` maps atom ``i``.
    """

    rotations: np.ndarray
    translations: np.ndarray
    perm: np.ndarray
    international: str = "P1"

    @property
    def trivial(self) -> bool:
        """Only the identity: projecting changes nothing."""
        return len(self.rotations) <= 1

    @classmethod
    def identity(cls, num_atoms: int) -> "SymmetryOps":
        return cls(np.eye(3, dtype=int)[None], np.zeros((1, 3)), np.arange(num_atoms)[None], "P1")


def _atom_maps(frac: np.ndarray, cell: np.ndarray, numbers: np.ndarray, rotations: np.ndarray,
               translations: np.ndarray, symprec: float) -> np.ndarray | None:
    """``perm[g, i]``: the atom nearest to the image of atom ``i`` under op ``g`` (same species);
    None when some image is farther than ``symprec`` from every atom or two atoms map onto one.

    Shapes:
        frac: [N, 3], cell: [3, 3], numbers: [N], rotations: [G, 3, 3], translations: [G, 3] -> [G, N].
    """
    n = len(frac)
    other = numbers[:, None] != numbers[None, :]
    perm = np.empty((len(rotations), n), dtype=np.int64)
    chunk = max(1, 200_000 // (n * n))
    for start in range(0, len(rotations), chunk):
        sl = slice(start, start + chunk)
        image = np.einsum("gij,nj->gni", rotations[sl], frac) + translations[sl, None, :]  # [g, N, 3]
        diff = frac[None, None, :, :] - image[:, :, None, :]  # [g, N(image of i), N(atom j), 3]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ cell, axis=-1)
        dist[:, other] = np.inf
        best = np.argmin(dist, axis=2)
        if np.take_along_axis(dist, best[..., None], axis=2).max() > 1.5 * symprec:
            return None
        perm[sl] = best
    if np.any(np.sort(perm, axis=1) != np.arange(n)):  # two atoms onto one
        return None
    return perm


def spglib_dataset(pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, symprec: float = DEFAULT_SYMPREC,
                   name: str = "structure") -> Any:
    """spglib's symmetry dataset of a structure at ``symprec`` (A), or None (logged) when it fails.

    Shapes:
        pos: [N, 3] Cartesian, cell: [3, 3] rows, numbers: [N].
    """
    import spglib

    frac = np.linalg.solve(cell.T, pos.T).T
    try:
        return spglib.get_symmetry_dataset((cell, frac, numbers), symprec=symprec)
    except Exception as exc:  # noqa: BLE001 - spglib raises its own error types
        log.warning("%s: spglib failed (%s); predicting without symmetry", name, exc)
        return None


def find_operations(pos: np.ndarray, cell: np.ndarray, numbers: np.ndarray, symprec: float = DEFAULT_SYMPREC,
                    name: str = "structure", dataset: Any = None) -> SymmetryOps:
    """The spglib operations of a structure at ``symprec`` (A) with their atom maps.

    A structure spglib cannot analyse, or whose operations do not map atoms onto atoms within
    ``symprec``, gets the identity only (logged), so it is predicted without projection.

    Args:
        pos, cell, numbers: the structure (Cartesian [N, 3], rows [3, 3], [N]).
        symprec, name: tolerance (A) and how logs name the structure.
        dataset: its :func:`spglib_dataset`, when already computed.
    """
    ds = dataset if dataset is not None else spglib_dataset(pos, cell, numbers, symprec, name)
    if ds is None or len(ds.rotations) <= 1:
        return SymmetryOps.identity(len(pos))
    rot, trans = np.asarray(ds.rotations, dtype=int), np.asarray(ds.translations, dtype=float)
    frac = np.linalg.solve(cell.T, pos.T).T
    perm = _atom_maps(frac, cell, np.asarray(numbers), rot, trans, symprec)
    if perm is None:
        log.warning("%s: spglib's operations (%s) do not map atoms onto atoms within symprec %g A; "
                    "predicting without symmetry projection", name, ds.international, symprec)
        return SymmetryOps.identity(len(pos))
    return SymmetryOps(rot, trans, perm, str(ds.international))


@dataclass
class BatchOps:
    """The operations of a batch of structures, flattened for :func:`project_batch`.

    Shapes (O operations and M atom-map entries over the batch, B structures):
        rotations: [O, 3, 3] float; op_graph: [O] structure of each operation; num_ops: [B];
        src, dst, op_of: [M] global atom indices, op ``op_of`` maps atom ``src`` onto ``dst``;
        trivial: [B] bool, only the identity (such a structure is left as it is).
    """

    rotations: torch.Tensor
    op_graph: torch.Tensor
    num_ops: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    op_of: torch.Tensor
    trivial: torch.Tensor

    @classmethod
    def from_ops(cls, ops: Sequence[SymmetryOps], dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> "BatchOps":
        """Flatten one :class:`SymmetryOps` per structure, in batch order (atoms consecutive)."""
        rot, op_graph, src, dst, op_of = [], [], [], [], []
        atom0, op0 = 0, 0
        for b, o in enumerate(ops):
            g, n = o.perm.shape
            rot.append(o.rotations.reshape(g, 3, 3))
            op_graph.append(np.full(g, b))
            src.append(np.tile(np.arange(n), g) + atom0)
            dst.append(o.perm.reshape(-1) + atom0)
            op_of.append(np.repeat(np.arange(g), n) + op0)
            atom0, op0 = atom0 + n, op0 + g
        long = functools.partial(torch.as_tensor, dtype=torch.long, device=device)
        return cls(torch.as_tensor(np.concatenate(rot), dtype=dtype, device=device), long(np.concatenate(op_graph)),
                   long([len(o.rotations) for o in ops]), long(np.concatenate(src)), long(np.concatenate(dst)),
                   long(np.concatenate(op_of)), torch.as_tensor([o.trivial for o in ops], device=device))


def spd_sqrt(a: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Square root of symmetric positive (semi)definite matrices by coupled Newton-Schulz
    iterations, scaled by the Frobenius norm so that they converge; differentiable everywhere,
    repeated eigenvalues included. Quadratic convergence: 30 iterations reach float64 round-off
    for condition numbers up to about 1e4; without a gradient to carry it stops once an iteration
    changes nothing at round-off (a few iterations for the near-identity roots of projection).

    Shapes:
        a: [..., 3, 3] -> [..., 3, 3].
    """
    norm = torch.linalg.matrix_norm(a).clamp_min(torch.finfo(a.dtype).tiny)[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a / norm, eye
    converged_early = not (torch.is_grad_enabled() and a.requires_grad)  # a differentiated root runs them all
    tol = 4 * torch.finfo(a.dtype).eps
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
        if converged_early and bool((t - eye).abs().max() <= tol):
            break
    return y * norm.sqrt()


def _symmetric_cells(w: torch.Tensor, op_graph: torch.Tensor, count: torch.Tensor, cell: torch.Tensor,
                     cell_u: torch.Tensor, inv_u: torch.Tensor) -> torch.Tensor:
    """``cell_u P`` with ``P^2 = cell_u^-1 G_sym cell_u^-T``, ``G_sym`` the mean of ``W^T G W``.

    Shapes:
        w: [O, 3, 3], op_graph: [O], count: [B], cell, cell_u, inv_u: [B, 3, 3] -> [B, 3, 3].
    """
    gram = cell @ cell.transpose(-1, -2)
    g_w = w.transpose(-1, -2) @ gram[op_graph] @ w
    g_sym = torch.zeros_like(gram).index_add(0, op_graph, g_w) / count[:, None, None]
    p2 = inv_u @ g_sym @ inv_u.transpose(-1, -2)
    return cell_u @ spd_sqrt(0.5 * (p2 + p2.transpose(-1, -2)))


def project_batch(ops: BatchOps, pos_u: torch.Tensor, cell_u: torch.Tensor, pos: torch.Tensor,
                  cell: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project one predicted layer of a batch onto its structures' operations (module docstring),
    differentiably; structures with only the identity come back unchanged.

    Shapes:
        pos_u, pos: [N, 3] Cartesian; cell_u, cell: [B, 3, 3] rows; batch: [N] -> ([N, 3], [B, 3, 3]).
    """
    w, count = ops.rotations.to(cell.dtype), ops.num_ops.to(cell.dtype)
    inv_u = torch.linalg.inv(cell_u)
    cell_sym = _symmetric_cells(w, ops.op_graph, count, cell, cell_u, inv_u)
    frac_u = (pos_u[:, None, :] @ inv_u[batch]).squeeze(1)
    disp = (pos[:, None, :] @ torch.linalg.inv(cell)[batch]).squeeze(1) - frac_u  # not wrapped
    moved = (disp[ops.src, None, :] @ w[ops.op_of].transpose(-1, -2)).squeeze(1)  # W d_i, onto atom dst
    d_sym = torch.zeros_like(disp).index_add(0, ops.dst, moved) / count[batch, None]
    pos_sym = ((frac_u + d_sym)[:, None, :] @ cell_sym[batch]).squeeze(1)
    keep = ops.trivial.to(cell.device)
    return torch.where(keep[batch, None], pos, pos_sym), torch.where(keep[:, None, None], cell, cell_sym)


def project_layers(ops: SymmetryOps, pos_u: np.ndarray, cell_u: np.ndarray, pos: list[np.ndarray],
                   cell: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`project` of every predicted layer of one structure, in one batched float64 call.

    Shapes:
        pos_u: [N, 3], cell_u: [3, 3]; pos: T x [N, 3], cell: T x [3, 3] -> T x ([N, 3], [3, 3]).
    """
    if ops.trivial:
        return list(zip(pos, cell))
    t, n = functools.partial(torch.as_tensor, dtype=torch.float64), len(pos_u)
    layers = len(pos)
    p, c = project_batch(BatchOps.from_ops([ops] * layers), t(np.tile(pos_u, (layers, 1))),
                         t(np.broadcast_to(cell_u, (layers, 3, 3)).copy()), t(np.concatenate(pos)), t(np.stack(cell)),
                         torch.arange(layers).repeat_interleave(n))
    p, c = p.numpy(), c.numpy()
    return [(p[k * n:(k + 1) * n], c[k]) for k in range(layers)]


def symmetric_cell(cell: np.ndarray, rotations: np.ndarray, cell_u: np.ndarray) -> np.ndarray:
    """The cell ``cell_u P`` (``P`` symmetric positive definite) whose metric is the average of the
    predicted ``cell``'s metric over ``rotations``.

    Shapes:
        cell: [3, 3] rows (the prediction), rotations: [G, 3, 3], cell_u: [3, 3] (the input) -> [3, 3].
    """
    w = torch.as_tensor(np.asarray(rotations), dtype=torch.float64)
    c, c_u = (torch.as_tensor(x, dtype=torch.float64)[None] for x in (cell, cell_u))
    out = _symmetric_cells(w, torch.zeros(len(w), dtype=torch.long), torch.tensor([float(len(w))],
                           dtype=torch.float64), c, c_u, torch.linalg.inv(c_u))
    return out[0].numpy()


def project(ops: SymmetryOps, pos_u: np.ndarray, cell_u: np.ndarray, pos: np.ndarray,
            cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project one predicted layer ``(pos, cell)`` of the input ``(pos_u, cell_u)`` onto ``ops``.

    Returns ``(pos, cell)`` themselves when ``ops`` is only the identity.

    Shapes:
        pos_u, pos: [N, 3] Cartesian; cell_u, cell: [3, 3] rows -> ([N, 3], [3, 3]).
    """
    return project_layers(ops, pos_u, cell_u, [pos], [cell])[0]
