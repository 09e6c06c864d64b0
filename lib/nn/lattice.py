"""Lattice nodes: lattice-atom interaction, lattice-node update and lattice update (Eq. 9-18).

The three lattice nodes of a structure are handled by one block with a lattice axis of size 3.
``per_lattice_params=True`` stacks one parameter set per lattice vector as ``[3, ...]`` (the
reference, which is not symmetric under relabelling the lattice vectors); ``False`` shares one set.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch_geometric.utils import scatter

from e3relax.geometry import atom_lattice_vectors, to_cartesian, to_fractional
from e3relax.model_base import SymmetryLaws, scale_lr_
from e3relax.nn.common import Block, INV_SQRT_3, LayerState, StackedLinear, StackedMLP, vector_norm
from e3relax.registry import BLOCKS


#: why each option of the lattice blocks breaks a law (errors measured by the shared test with the
#: E3Relax test_config(): float64, F = 8, T = 2, weights perturbed by 0.05)
ABSOLUTE_GEOMETRY = "lattice-atom geometry uses absolute positions (tip_absolute)"
CENTROID_GEOMETRY = ("centroid lattice-atom geometry depends on the stored image of each atom "
                     "(measured 9.4e-1 in E3Relax[centroid])")
TRANSPOSED_UPDATE = "lattice update added as columns (transposed)"
STRAIN_RESIDUAL = ("wrap is exact only for a fixed cell; a changing cell leaves a strain residual "
                   "(measured 1.3e-2 on the test fixtures, output change 7.9e-2)")
#: atoms carried with the strain of the predicted cell: fractional translation law, wrap by L_hat
ATOMS_RIDE_CELL = SymmetryLaws(translation="fractional", wrap="predicted_cell")
CELL_MOVES_ATOMS_STAY = SymmetryLaws(wrap="none", broken={"wrap": STRAIN_RESIDUAL})


#: default per-layer bound of a lattice-vector update, relative to the vector's current length
MAX_STRAIN = 0.25


def bounded_rows(delta: torch.Tensor, cell: torch.Tensor, max_strain: Optional[float]) -> torch.Tensor:
    """Saturate each row update ``d_c`` of ``cell`` smoothly below ``max_strain * |l_c|`` (None: unchanged).

    ``d_c <- d_c * k|l_c| / sqrt((k|l_c|)^2 + |d_c|^2)``: linear for small updates (factor
    ``1 - |d_c|^2 / (2 k^2 |l_c|^2)``), ``|d_c| < k|l_c|`` always, smooth everywhere (no division by
    ``|d_c|``), and the factor is rotation-invariant, so an equivariant update stays exactly equivariant.

    Shapes:
        delta: [B, 3, 3] (rows added to the rows of cell); cell: [B, 3, 3] -> [B, 3, 3]
    """
    if max_strain is None:
        return delta
    bound = max_strain * torch.linalg.vector_norm(cell, dim=-1, keepdim=True)  # [B, 3, 1]
    return delta * bound * torch.rsqrt(bound * bound + (delta * delta).sum(-1, keepdim=True))


def _on_vectors(lin: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """Apply a lattice-stacked map to vector features ``[B, 3(c), 3(xyz), F]`` (stack axis = c)."""
    return lin(t.transpose(1, 2)).transpose(1, 2)


@BLOCKS.register("lattice_atom_interaction")
class LatticeAtomInteraction(Block):
    """Lattice -> atom messages (paper Eq. 15-18, in the reference's form), for c = 1, 2, 3 in turn.

    With ``d_ic`` the atom-lattice vector of ``geometry_mode`` (``tip_absolute``: ``l_c - r_i``,
    reference; ``centroid``; ``lattice_only``: ``l_c``), ``rho = |d_ic|``, ``u = -d_ic / rho``::

        [a1, a2, a3] = MLP_x^c(x_i) * (W_e^c lambda(rho_ic) + b_e^c) / sqrt 3     (F -> F -> 3F; K -> 3F)
        x_i <- x_i + a3
        w_i  = (a1 * v_i + a2 (x) u_ic) / sqrt F;  v_i <- w_i (replace_vectors, reference) or v_i + w_i
        x_i <- MLP_loc^c([x_i || y_c]) + x_i                                      (2F -> F -> F, act after both)
        v_i <- W_loc^c (v_i + ybar_c) + v_i                                        (F x F, no bias)

    The reference replaces ``v`` (shrinking it by 1/sqrt F per lattice node); the default keeps
    a residual. Lattice states and geometry are those at the start of the layer. ``rho`` is
    clamped at 1e-8 in ``u`` (as the reference), so an atom on a lattice-vector tip is finite.

    Symmetry: ``tip_absolute`` breaks translation and wrapping, ``centroid`` wrapping.

    Shapes:
        s: [N, F]; v: [N, 3, F]; y: [B, 3, F]; ybar: [B, 3, 3, F]; pos: [N, 3]; cell: [B, 3, 3];
        batch: [N]  -> s: [N, F], v: [N, 3, F]
    """

    symmetry_options = {"geometry_mode": {
        "tip_absolute": SymmetryLaws(translation="none", wrap="none",
                                     broken={"translation": ABSOLUTE_GEOMETRY, "wrap": ABSOLUTE_GEOMETRY}),
        "centroid": SymmetryLaws(wrap="none", broken={"wrap": CENTROID_GEOMETRY}),
    }}
    reads = ("s", "v", "y", "ybar", "pos", "cell", "batch", "radial")
    writes = ("s", "v")

    def __init__(
        self,
        hidden_channels: int,
        num_rbf: int,
        per_lattice_params: bool = False,
        geometry_mode: str = "lattice_only",
        replace_vectors: bool = False,
    ) -> None:
        super().__init__()
        if geometry_mode not in ("tip_absolute", "centroid", "lattice_only"):
            raise ValueError(
                f"lattice_atom_interaction: geometry_mode '{geometry_mode}' unknown; "
                "use tip_absolute, centroid or lattice_only"
            )
        f, s = hidden_channels, 3 if per_lattice_params else 1
        self.hidden_channels = f
        self.geometry_mode = geometry_mode
        self.replace_vectors = replace_vectors
        self.scalar_mlp = StackedMLP(s, [f, f, 3 * f])
        self.rbf_proj = StackedLinear(s, num_rbf, 3 * f)
        self.local_mlp = StackedMLP(s, [2 * f, f, f], act_last=True)
        self.local_vec = StackedLinear(s, f, f, bias=False)
        self.inv_sqrt_f = 1.0 / math.sqrt(f)

    def forward(self, s, v, y, ybar, pos, cell, batch, radial: nn.Module):
        vec, dist = atom_lattice_vectors(pos, cell, batch, self.geometry_mode)  # [N,3,3], [N,3]
        unit = -vec / dist.clamp_min(1e-8)[..., None]
        rbf = radial(dist)  # [N, 3, K]
        f = self.hidden_channels
        for c in range(3):
            a = self.scalar_mlp(s, c) * self.rbf_proj(rbf[:, c], c) * INV_SQRT_3
            a1, a2, a3 = torch.split(a, f, dim=-1)
            s = s + a3
            w = (a1[:, None, :] * v + a2[:, None, :] * unit[:, c, :, None]) * self.inv_sqrt_f
            v = w if self.replace_vectors else v + w
            s = self.local_mlp(torch.cat([s, y[batch, c]], dim=-1), c) + s
            v = self.local_vec(v + ybar[batch, c], c) + v
        return s, v

    def step(self, state: LayerState) -> None:
        state.s, state.v = self(
            state.s, state.v, state.y, state.ybar, state.pos, state.cell, state.batch, state.radial
        )


@BLOCKS.register("lattice_node_update")
class LatticeNodeUpdate(Block):
    """Atom -> lattice aggregation and gated lattice-node self-update (paper Eq. 9-12, reference form).

    Vectorised over the three lattice nodes c of each structure::

        y_c    <- y_c + MLP_glob^c([mean_i x_i || y_c])       (2F -> F -> F, act after both)
        ybar_c <- ybar_c + W_glob^c(mean_i v_i + ybar_c)       (F x F, no bias)
        [Y1, Y2] = W_Y^c ybar_c;  [k1, k2, k3] = MLP_Y^c([y_c || |Y2|])   (F -> 2F; 2F -> F -> 3F)
        y_c <- k2 + y_c * tanh(k3);  ybar_c <- k1 * Y1 + ybar_c

    Shapes:
        s: [N, F]; v: [N, 3, F]; y: [B, 3, F]; ybar: [B, 3, 3, F]; batch: [N]
        -> y: [B, 3, F], ybar: [B, 3, 3, F]
    """

    reads = ("s", "v", "y", "ybar", "batch", "num_graphs")
    writes = ("y", "ybar")

    def __init__(self, hidden_channels: int, per_lattice_params: bool = False) -> None:
        super().__init__()
        f, s = hidden_channels, 3 if per_lattice_params else 1
        self.hidden_channels = f
        self.global_mlp = StackedMLP(s, [2 * f, f, f], act_last=True)
        self.global_vec = StackedLinear(s, f, f, bias=False)
        self.vec_proj = StackedLinear(s, f, 2 * f, bias=False)
        self.gate_mlp = StackedMLP(s, [2 * f, f, 3 * f])

    def forward(self, s, v, y, ybar, batch, num_graphs: int):
        f = self.hidden_channels
        ms = scatter(s, batch, dim=0, dim_size=num_graphs, reduce="mean")  # [B, F]
        mv = scatter(v, batch, dim=0, dim_size=num_graphs, reduce="mean")  # [B, 3, F]
        y = y + self.global_mlp(torch.cat([ms[:, None, :].expand_as(y), y], dim=-1))
        ybar = ybar + _on_vectors(self.global_vec, mv[:, None] + ybar)
        y1, y2 = torch.split(_on_vectors(self.vec_proj, ybar), f, dim=-1)
        k = self.gate_mlp(torch.cat([y, vector_norm(y2, dim=2)], dim=-1))
        k1, k2, k3 = torch.split(k, f, dim=-1)
        return k2 + y * torch.tanh(k3), k1[:, :, None, :] * y1 + ybar

    def step(self, state: LayerState) -> None:
        state.y, state.ybar = self(state.s, state.v, state.y, state.ybar, state.batch, state.num_graphs)


@BLOCKS.register("lattice_update")
class LatticeUpdate(Block):
    """Lattice vectors moved by their lattice nodes' vector features (paper Eq. 13-14).

    ``dl_c = W_l^c ybar_c`` (``F -> 1``, no bias, one 3-vector per c). ``transpose=False`` adds
    ``dl_c`` to row c of the cell (``l_c <- l_c + dl_c``, equivariant); ``transpose=True``
    reproduces the reference, which adds ``dl_c`` as column c (``L <- L + D^T``; not rotation
    equivariant). ``affine_positions=True`` carries atoms with the strain: ``r <- r L_old^-1 L_new``.

    Bounded strain (``max_strain = k``, default 0.25): each row update is saturated smoothly,
    ``d_c <- d_c k|l_c| / sqrt(k^2 |l_c|^2 + |d_c|^2)`` (:func:`bounded_rows`), so one layer changes
    every lattice-vector length by a factor in ``(1 - k, 1 + k)`` and turns it by less than
    ``asin(k)`` (14.5 deg); a near-identity update is unchanged to second order. ``None`` (the
    reference, ``paper_faithful``) adds ``dl_c`` unbounded.

    Identity at initialisation (``identity_init``, default): ``W_l = 0``, so ``L_hat = L`` exactly at
    every layer until the first optimiser step (which moves ``W_l``; the blocks before it get
    gradients from the second step). ``False`` keeps PyTorch's default (the reference).

    Symmetry: ``transpose`` breaks rotation and reflection; ``affine_positions`` turns the
    translation law fractional and wrapping into wrapping by the predicted cell; without it a
    changing cell breaks wrapping (strain residual in the next layer's geometry).

    Shapes:
        ybar: [B, 3, 3, F]; cell: [B, 3, 3]; pos: [N, 3]; batch: [N] -> pos: [N, 3], cell: [B, 3, 3]
    """

    symmetry_options = {
        "transpose": {True: SymmetryLaws(rotation=False, reflection=False,
                                         broken={"rotation": TRANSPOSED_UPDATE, "reflection": TRANSPOSED_UPDATE})},
        "affine_positions": {True: ATOMS_RIDE_CELL, False: CELL_MOVES_ATOMS_STAY},
    }
    reads = ("pos", "cell", "ybar", "batch", "refine")
    writes = ("pos", "cell")

    def __init__(
        self,
        hidden_channels: int,
        per_lattice_params: bool = False,
        transpose: bool = False,
        affine_positions: bool = False,
        identity_init: bool = True,
        max_strain: Optional[float] = MAX_STRAIN,
    ) -> None:
        super().__init__()
        self.transpose = transpose
        self.affine_positions = affine_positions
        self.max_strain = None if max_strain is None else float(max_strain)
        self.vec_out = StackedLinear(3 if per_lattice_params else 1, hidden_channels, 1, bias=False)
        if identity_init:
            nn.init.zeros_(self.vec_out.weight)
            scale_lr_(self.vec_out.weight)

    def delta(self, ybar: torch.Tensor, cell: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Cell change ``[B, 3, 3]`` (rows, or the reference's columns when ``transpose``), bounded
        relative to ``cell`` when it is given."""
        d = _on_vectors(self.vec_out, ybar).squeeze(-1)  # [B, 3(c), 3(xyz)]
        d = d.transpose(1, 2) if self.transpose else d
        return d if cell is None else bounded_rows(d, cell, self.max_strain)

    def forward(self, pos, cell, ybar, batch):
        new_cell = cell + self.delta(ybar, cell)
        if self.affine_positions:
            pos = to_cartesian(to_fractional(pos, cell, batch), new_cell, batch)
        return pos, new_cell

    def step(self, state: LayerState) -> None:
        if state.refine:
            state.pos, state.cell = self(state.pos, state.cell, state.ybar, state.batch)
