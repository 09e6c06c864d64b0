"""Output heads: one base class per kind, with a fixed forward signature, and the shared heads.

Kinds (base classes):

* :class:`DisplacementHead`: ``forward(s [N, F], v [N, 3, F]) -> delta [N, 3]``; the model adds
  ``delta`` to the unrelaxed positions (paper Appendix C: a force head repurposed).
* :class:`LatticeHead`: ``forward(s [N, F], cell_u [B, 3, 3], batch [N], num_graphs) -> cell [B, 3, 3]``;
  :meth:`LatticeHead.per_layer` applies it to every layer's features.

Registered in :data:`e3relax.registry.HEADS`:

* ``gated_displacement``: two PaiNN gated-equivariant blocks, F -> F/2 -> 1 vector channel, whose
  single output vector is the displacement of each atom (the OCP ``PaiNNOutput`` force head
  repurposed for relaxation, paper Appendix C).
* ``deeprelax_lattice``: the DeepRelax lattice head (sum-pooled atom features plus an embedding of
  the flattened initial cell, decoded to a residual 3x3). Consumes raw Cartesian cell numbers, so it
  is NOT rotation- or reflection-equivariant.
* ``equivariant_lattice``: ``L_hat = (I + M) L_u`` with ``M`` an MLP of rotation-invariant inputs
  (pooled features and the Gram matrix ``L_u L_u^T``), hence exactly O(3)-equivariant.

Both lattice heads share one body (:class:`PooledLatticeHead`): sum pooling, an embedding of a
9-number cell descriptor, an output MLP to 9 numbers; they differ in the descriptor and in how the
9 numbers change the cell.

Identity at initialisation: the last projection of every head starts at zero (``identity_init``,
default), so a model predicts its input until the first optimiser step; the layers before it get
gradients from the second step. The zeroed projection trains at ``ZERO_INIT_LR_SCALE`` (10) times
the run's learning rate (:func:`e3relax.model_base.param_groups`), so it catches up within tens of steps. Bounded strain: each lattice head's update of lattice vector c is
saturated below ``max_strain * |l_c|`` (default 0.5; :func:`~e3relax.nn.lattice.bounded_rows`), so
one head cannot produce an unphysical cell.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch_geometric.utils import scatter

from e3relax.model_base import SymmetryLaws, scale_lr_
from e3relax.nn.common import Block, ScaledSiLU, mlp, xavier_
from e3relax.nn.lattice import bounded_rows
from e3relax.registry import HEADS

__all__ = ["DisplacementHead", "LatticeHead", "PooledLatticeHead", "GatedEquivariantBlock",
           "GatedDisplacementHead", "DeepRelaxLatticeHead", "EquivariantLatticeHead"]

#: why the DeepRelax lattice head breaks rotation and reflection
CARTESIAN_CELL = ("the DeepRelax lattice head reads and writes Cartesian cell components, so the predicted "
                  "cell does not rotate or reflect with the input")


class DisplacementHead(Block):
    """Base class of displacement heads: per-atom displacement from scalar and vector features.

    Shapes:
        s: [N, F], v: [N, 3, F]  ->  delta: [N, 3]
    """

    def forward(self, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LatticeHead(Block):
    """Base class of lattice heads: the predicted cell from atom features and the input cell.

    Shapes:
        s: [N, F], cell_u: [B, 3, 3], batch: [N], num_graphs: B  ->  cell: [B, 3, 3]
    """

    def forward(self, s: torch.Tensor, cell_u: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def per_layer(self, feats: Sequence[torch.Tensor], cell_u: torch.Tensor, batch: torch.Tensor,
                  num_graphs: int, every_layer: bool = True) -> list[torch.Tensor]:
        """Cells for each layer's features, or from the last layer's only, repeated (``every_layer=False``).

        Shapes:
            feats: T x [N, F] -> T x [B, 3, 3]
        """
        if every_layer:
            return [self(x, cell_u, batch, num_graphs) for x in feats]
        return [self(feats[-1], cell_u, batch, num_graphs)] * len(feats)


class GatedEquivariantBlock(nn.Module):
    """PaiNN gated-equivariant block (Schuett et al., ICML 2021, Fig. 3; OCP ``GatedEquivariantBlock``).

    ``w = ||W1 v||``, ``[x', g] = MLP([x || w])``, ``v' = g * (W2 v)``, ``x' = act(x')`` (optional).
    W1, W2 act on the channel axis only (no bias), so ``v'`` rotates with ``v`` and ``x'`` is invariant.

    Args:
        in_channels: input width F.
        out_channels: output width (scalar and vector).
        scalar_activation: apply ScaledSiLU to the scalar output (true for all but the last block).

    Shapes:
        x: [N, F_in], v: [N, 3, F_in]  ->  x': [N, F_out], v': [N, 3, F_out]
    """

    def __init__(self, in_channels: int, out_channels: int, scalar_activation: bool = True) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.vec1 = nn.Linear(in_channels, in_channels, bias=False)
        self.vec2 = nn.Linear(in_channels, out_channels, bias=False)
        self.update = mlp([2 * in_channels, in_channels, 2 * out_channels])
        self.act = ScaledSiLU() if scalar_activation else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.vec1, self.vec2, self.update[0], self.update[2]):
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.linalg.vector_norm(self.vec1(v), dim=-2)
        x_out, gate = self.update(torch.cat([x, w], dim=-1)).split(self.out_channels, dim=-1)
        v_out = gate.unsqueeze(-2) * self.vec2(v)
        return self.act(x_out), v_out


@HEADS.register("gated_displacement")
class GatedDisplacementHead(DisplacementHead):
    """Displacement head: two gated-equivariant blocks F -> F/2 -> 1 (OCP ``PaiNNOutput``).

    Paper Appendix C: the force head of a force-field model predicts ``Delta r_i`` and
    ``r_hat_i = r_u_i + Delta r_i``. O(3)-equivariant (the output is a polar vector built only from
    channel mixing of ``v`` and invariant gates).

    Args:
        hidden_channels: F, width of the backbone's scalar and vector features.
        identity_init: the last vector projection (``block2.vec2``) starts at zero: ``delta = 0``.

    Shapes:
        x: [N, F], v: [N, 3, F]  ->  delta: [N, 3]
    """

    def __init__(self, hidden_channels: int, identity_init: bool = True) -> None:
        super().__init__()
        mid = max(hidden_channels // 2, 1)
        self.block1 = GatedEquivariantBlock(hidden_channels, mid, scalar_activation=True)
        self.block2 = GatedEquivariantBlock(mid, 1, scalar_activation=False)
        if identity_init:
            scale_lr_(nn.init.zeros_(self.block2.vec2.weight))

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x, v = self.block1(x, v)
        _, v = self.block2(x, v)
        return v[..., 0]


class PooledLatticeHead(LatticeHead):
    """Shared body of the lattice heads::

        g = sum_i ScaledSiLU(W_a x_i + b)                 (sum pooling)
        c = MLP_c(descriptor(L_u))                        9 -> F -> F (activation after each layer)
        m = reshape(MLP_o([g || c]), 3, 3)                 2F -> F -> F -> 9
        L_hat = update(L_u, m)

    Subclasses define :meth:`descriptor` and :meth:`update`. Xavier-uniform weights, zero biases;
    with ``identity_init`` (default) the last linear of ``MLP_o`` is zero, so ``m = 0`` and
    ``L_hat = L_u`` at initialisation. :meth:`bounded` saturates row c of the cell change below
    ``max_strain * |l_u,c|`` (None: unbounded).

    Args:
        hidden_channels: F.
        identity_init: zero last projection.
        max_strain: bound of each lattice-vector change relative to its length.

    Shapes:
        x: [N, F], cell_u: [B, 3, 3], batch: [N]  ->  cell: [B, 3, 3]
    """

    def __init__(self, hidden_channels: int, identity_init: bool = True, max_strain: Optional[float] = 0.5) -> None:
        super().__init__()
        f = hidden_channels
        self.max_strain = None if max_strain is None else float(max_strain)
        self.pool_proj = nn.Linear(f, f)
        self.cell_embed = mlp([9, f, f], act_last=True)
        self.out = mlp([2 * f, f, f, 9], act_last=False)
        xavier_(self)
        if identity_init:
            scale_lr_(nn.init.zeros_(self.out[-1].weight))
            scale_lr_(self.out[-1].bias)

    def bounded(self, delta: torch.Tensor, cell_u: torch.Tensor) -> torch.Tensor:
        """``L_u + delta`` with each row of ``delta`` saturated. Shapes: [B, 3, 3] x 2 -> [B, 3, 3]."""
        return cell_u + bounded_rows(delta, cell_u, self.max_strain)

    def descriptor(self, cell_u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """9 numbers per structure describing the input cell. Shapes: [B, 3, 3] -> [B, 9]."""
        raise NotImplementedError

    def update(self, cell_u: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The predicted cell from the input cell and the decoded 3x3. Shapes: [B, 3, 3] x 2 -> [B, 3, 3]."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, cell_u: torch.Tensor, batch: torch.Tensor,
                num_graphs: Optional[int] = None) -> torch.Tensor:
        size = cell_u.shape[0] if num_graphs is None else num_graphs
        g = scatter(ScaledSiLU.fn(self.pool_proj(x)), batch, dim=0, dim_size=size, reduce="sum")
        m = self.out(torch.cat([g, self.cell_embed(self.descriptor(cell_u))], dim=-1)).reshape(-1, 3, 3)
        return self.update(cell_u, m)


@HEADS.register("deeprelax_lattice")
class DeepRelaxLatticeHead(PooledLatticeHead):
    """DeepRelax lattice head (Yang et al., DeepRelax 2024; reused for every baseline, E3Relax App. C).

    ::

        descriptor = vec(L_u)   (row-major flatten of the Cartesian cell)
        L_hat = L_u + m         (each row of m saturated below max_strain |l_u,c|)

    Not rotation- or reflection-equivariant: it reads and writes Cartesian cell components.

    Args:
        hidden_channels: F.

    Shapes:
        x: [N, F], cell_u: [B, 3, 3], batch: [N]  ->  cell: [B, 3, 3]
    """

    symmetry = SymmetryLaws(rotation=False, reflection=False,
                            broken={"rotation": CARTESIAN_CELL, "reflection": CARTESIAN_CELL})

    def descriptor(self, cell_u: torch.Tensor) -> torch.Tensor:
        return cell_u.reshape(-1, 9)

    def update(self, cell_u: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.bounded(m, cell_u)


@HEADS.register("equivariant_lattice")
class EquivariantLatticeHead(PooledLatticeHead):
    """O(3)-equivariant lattice head: ``L_hat = (I + M) L_u``.

    Paper: the equivariant replacement of the DeepRelax lattice head of E3Relax Appendix C
    (e3relax-spec §2.3, "equivariant alternative").

    ``descriptor = vec(L_u L_u^T) / gram_scale`` (the Gram matrix), ``L_hat = L_u + M L_u`` with
    ``M = m`` (or ``(m + m^T)/2`` with ``symmetric``). Under ``L_u -> L_u R^T`` the Gram matrix and
    the pooled ``g`` are unchanged, so ``L_hat -> L_hat R^T`` exactly, for proper and improper R
    (the strain bound scales row c of ``M L_u`` by a function of its length and ``|l_u,c|``, both
    invariant).
    ``M`` mixes lattice vectors (rows), i.e. it acts in the lattice basis. It is not invariant to
    the choice of cell (GL(3, Z)), like the DeepRelax head.

    Args:
        hidden_channels: F.
        gram_scale: divides the Gram entries (Angstrom^2) to bring them to order one.
        symmetric: symmetrise M.

    Shapes:
        x: [N, F], cell_u: [B, 3, 3], batch: [N]  ->  cell: [B, 3, 3]
    """

    def __init__(self, hidden_channels: int, gram_scale: float = 25.0, symmetric: bool = False,
                 identity_init: bool = True, max_strain: Optional[float] = 0.5) -> None:
        super().__init__(hidden_channels, identity_init, max_strain)
        self.gram_scale = float(gram_scale)
        self.symmetric = bool(symmetric)

    def descriptor(self, cell_u: torch.Tensor) -> torch.Tensor:
        return (cell_u @ cell_u.transpose(-1, -2) / self.gram_scale).reshape(-1, 9)

    def update(self, cell_u: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            m = 0.5 * (m + m.transpose(-1, -2))
        return self.bounded(m @ cell_u, cell_u)
