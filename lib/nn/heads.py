"""Output heads shared by the baselines: a gated-equivariant displacement head and two lattice heads.

Registered in :data:`e3relax.registry.HEADS`:

* ``gated_displacement``: two PaiNN gated-equivariant blocks, F -> F/2 -> 1 vector channel, whose
  single output vector is the displacement of each atom (the OCP ``PaiNNOutput`` force head
  repurposed for relaxation, paper Appendix C).
* ``deeprelax_lattice``: the DeepRelax lattice head (sum-pooled atom features plus an embedding of
  the flattened initial cell, decoded to a residual 3x3). Consumes raw Cartesian cell numbers, so it
  is NOT rotation- or reflection-equivariant.
* ``equivariant_lattice``: ``L_hat = (I + M) L_u`` with ``M`` an MLP of rotation-invariant inputs
  (pooled features and the Gram matrix ``L_u L_u^T``), hence exactly O(3)-equivariant.

Forward signatures:
    displacement head: ``forward(x [N, F], v [N, 3, F]) -> [N, 3]``
    lattice heads: ``forward(x [N, F], cell_u [B, 3, 3], batch [N], num_graphs: int | None) -> [B, 3, 3]``
"""
from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from e3relax.nn.common import ScaledSiLU, mlp, xavier_
from e3relax.registry import HEADS

__all__ = ["GatedEquivariantBlock", "GatedDisplacementHead", "DeepRelaxLatticeHead",
           "EquivariantLatticeHead"]


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
class GatedDisplacementHead(nn.Module):
    """Displacement head: two gated-equivariant blocks F -> F/2 -> 1 (OCP ``PaiNNOutput``).

    Paper Appendix C: the force head of a force-field model predicts ``Delta r_i`` and
    ``r_hat_i = r_u_i + Delta r_i``. O(3)-equivariant (the output is a polar vector built only from
    channel mixing of ``v`` and invariant gates).

    Args:
        hidden_channels: F, width of the backbone's scalar and vector features.

    Shapes:
        x: [N, F], v: [N, 3, F]  ->  delta: [N, 3]
    """

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        mid = max(hidden_channels // 2, 1)
        self.block1 = GatedEquivariantBlock(hidden_channels, mid, scalar_activation=True)
        self.block2 = GatedEquivariantBlock(mid, 1, scalar_activation=False)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x, v = self.block1(x, v)
        _, v = self.block2(x, v)
        return v[..., 0]


def _pool(x: torch.Tensor, proj: nn.Linear, batch: torch.Tensor, num_graphs: int | None) -> torch.Tensor:
    """``g = sum_i ScaledSiLU(W_a x_i + b)`` per structure. Shapes: [N, F] -> [B, F]."""
    size = int(batch.max()) + 1 if num_graphs is None else num_graphs
    return scatter(ScaledSiLU.fn(proj(x)), batch, dim=0, dim_size=size, reduce="sum")


@HEADS.register("deeprelax_lattice")
class DeepRelaxLatticeHead(nn.Module):
    """DeepRelax lattice head (Yang et al., DeepRelax 2024; reused for every baseline, E3Relax App. C).

    ::

        g = sum_i ScaledSiLU(W_a x_i + b)                     (sum pooling)
        c = MLP_c(vec(L_u))        9 -> F -> F (activation after each layer; row-major flatten)
        L_hat = L_u + reshape(MLP_o([g || c]), 3, 3)          MLP_o: 2F -> F -> F -> 9

    Not rotation- or reflection-equivariant: it reads and writes Cartesian cell components.

    Args:
        hidden_channels: F.

    Shapes:
        x: [N, F], cell_u: [B, 3, 3], batch: [N]  ->  cell: [B, 3, 3]
    """

    def __init__(self, hidden_channels: int) -> None:
        super().__init__()
        f = hidden_channels
        self.pool_proj = nn.Linear(f, f)
        self.cell_embed = mlp([9, f, f], act_last=True)
        self.out = mlp([2 * f, f, f, 9], act_last=False)
        xavier_(self)

    def forward(
        self, x: torch.Tensor, cell_u: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None
    ) -> torch.Tensor:
        g = _pool(x, self.pool_proj, batch, num_graphs if num_graphs is not None else cell_u.shape[0])
        c = self.cell_embed(cell_u.reshape(-1, 9))
        return cell_u + self.out(torch.cat([g, c], dim=-1)).reshape(-1, 3, 3)


@HEADS.register("equivariant_lattice")
class EquivariantLatticeHead(nn.Module):
    """O(3)-equivariant lattice head: ``L_hat = (I + M) L_u``.

    Paper: the equivariant replacement of the DeepRelax lattice head of E3Relax Appendix C
    (e3relax-spec §2.3, "equivariant alternative").

    ``M = reshape(MLP([g || vec(L_u L_u^T) / gram_scale]), 3, 3)``, with ``g`` the sum-pooled
    invariant atom features. Under ``L_u -> L_u R^T`` the Gram matrix and ``g`` are unchanged, so
    ``L_hat -> L_hat R^T`` exactly, for proper and improper R. ``M`` mixes lattice vectors
    (rows), i.e. it acts in the lattice basis; ``symmetric=True`` uses ``(M + M^T)/2``.
    It is not invariant to the choice of cell (GL(3, Z)), like the DeepRelax head.

    Args:
        hidden_channels: F.
        gram_scale: divides the Gram entries (Angstrom^2) to bring them to order one.
        symmetric: symmetrise M.

    Shapes:
        x: [N, F], cell_u: [B, 3, 3], batch: [N]  ->  cell: [B, 3, 3]
    """

    def __init__(self, hidden_channels: int, gram_scale: float = 25.0, symmetric: bool = False) -> None:
        super().__init__()
        f = hidden_channels
        self.gram_scale = float(gram_scale)
        self.symmetric = bool(symmetric)
        self.pool_proj = nn.Linear(f, f)
        self.cell_embed = mlp([9, f, f], act_last=True)
        self.out = mlp([2 * f, f, f, 9], act_last=False)
        xavier_(self)

    def forward(
        self, x: torch.Tensor, cell_u: torch.Tensor, batch: torch.Tensor, num_graphs: int | None = None
    ) -> torch.Tensor:
        g = _pool(x, self.pool_proj, batch, num_graphs if num_graphs is not None else cell_u.shape[0])
        gram = cell_u @ cell_u.transpose(-1, -2) / self.gram_scale
        m = self.out(torch.cat([g, self.cell_embed(gram.reshape(-1, 9))], dim=-1)).reshape(-1, 3, 3)
        if self.symmetric:
            m = 0.5 * (m + m.transpose(-1, -2))
        return cell_u + m @ cell_u

