"""GotenNet baseline adapted to one-shot crystal relaxation (E3Relax paper, Appendix C)."""
from __future__ import annotations

from typing import Any

from e3nn import o3
from torch import nn

from e3relax.model_base import RelaxModel
from e3relax.nn.embedding import NUM_ELEMENTS
from e3relax.registry import BLOCKS, HEADS, MODELS
from e3relax.types import RelaxOutput


@MODELS.register("gotennet")
class GotenNet(RelaxModel):
    """GotenNet (Aykent & Xia, "GotenNet: Rethinking Efficient 3D Equivariant Graph Neural
    Networks", ICLR 2025) with its force head repurposed as a displacement head.

    Kept from the original (``sarpaykent/GotenNet``): node and edge initialisation from an
    exp-normal radial basis with cosine cutoff; per layer GATA (multi-head attention modulated by
    the edge scalars, invariant and steerable messages, sqrt(n_i) scaling, attention dropout),
    HTR edge refinement from degree-wise inner products (not after the last layer; the default
    ``'norej'`` variant, rejection optional), EQFF; steerable features of degrees 1..L (L = 2)
    starting at zero; SiLU; sum aggregation; defaults F = 128, 20 radial functions, 8 heads,
    dropout 0.1. Adapted for crystals: the edge vectors include the periodic image,
    ``r_ij = r_j + k_ij L_u - r_i``, and the cutoff defaults to the 6 A graph radius instead of 5 A;
    the displacement ``Delta r_i`` comes from ``(h, X^(1))`` through the shared gated-equivariant
    head (``r_hat = r_u + Delta r``) and the cell from the shared lattice head, one output layer.
    The optional layer norms of the original (off in its configuration) are left out.

    Symmetry: positions exactly O(3)-, translation-, permutation- and wrap-equivariant (input cell);
    the DeepRelax lattice head breaks rotation/reflection of the cell (its own declaration).

    Args:
        hidden_channels: F (divisible by num_heads).
        num_layers: number of GATA + EQFF blocks.
        num_rbf: K of the exp-normal basis.
        cutoff: radial cutoff (Angstrom), also of the cosine cutoff inside GATA.
        lmax: L, highest degree of the steerable features.
        num_heads: attention heads.
        attn_dropout: dropout on attention weights.
        edge_updates: run HTR between layers.
        vector_rejection: HTR with vector rejection (the authors' ``'rej'`` option).
        degree_wise: one GATA value chunk per degree (``sep_dir`` / ``sep_tensor``).
        scale_edge: sqrt(n_i) scaling of the attention weights.
        displacement_head, lattice_head: specs in ``HEADS``.
    """

    measured_errors = {"rotation": "20 A (cell; positions ~1e-15)", "reflection": "9.5 A (cell; positions ~1e-15)"}

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 4,
        num_rbf: int = 20,
        cutoff: float = 6.0,
        lmax: int = 2,
        num_heads: int = 8,
        attn_dropout: float = 0.1,
        edge_updates: bool = True,
        vector_rejection: bool = False,
        degree_wise: bool = False,
        scale_edge: bool = True,
        displacement_head: Any = "gated_displacement",
        lattice_head: Any = "deeprelax_lattice",
    ) -> None:
        super().__init__()
        f = hidden_channels
        self.lmax = lmax
        self.irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(1, lmax + 1)])
        self.embedding = nn.Embedding(NUM_ELEMENTS + 1, f)
        self.rbf = BLOCKS.build({"name": "expnorm_rbf", "num_rbf": num_rbf, "cutoff": cutoff})
        self.node_init = BLOCKS.build({"name": "goten_node_init", "hidden_channels": f, "num_rbf": num_rbf,
                                       "cutoff": cutoff})
        self.edge_init = BLOCKS.build({"name": "goten_edge_init", "hidden_channels": f, "num_rbf": num_rbf})
        gata = {"name": "gata", "hidden_channels": f, "num_heads": num_heads, "lmax": lmax, "cutoff": cutoff,
                "attn_dropout": attn_dropout, "scale_edge": scale_edge, "degree_wise": degree_wise}
        self.gata = nn.ModuleList(BLOCKS.build(gata) for _ in range(num_layers))
        htr = {"name": "htr", "hidden_channels": f, "lmax": lmax, "rejection": vector_rejection}
        self.htr = nn.ModuleList(BLOCKS.build(htr) for _ in range(num_layers - 1 if edge_updates else 0))
        self.eqff = nn.ModuleList(BLOCKS.build({"name": "eqff", "hidden_channels": f}) for _ in range(num_layers))
        self.displacement_head = HEADS.build(displacement_head, hidden_channels=f)
        self.lattice_head = HEADS.build(lattice_head, hidden_channels=f)

    @classmethod
    def test_config(cls) -> dict:
        return {"hidden_channels": 8, "num_layers": 2, "num_rbf": 8, "num_heads": 2, "attn_dropout": 0.0}

    def forward(self, data) -> RelaxOutput:
        inp = self.inputs(data)
        edge_index, dist, z = inp.edge_index, inp.dist, inp.z
        rsh = o3.spherical_harmonics(self.irreps, inp.vec, normalize=True, normalization="norm")
        rbf = self.rbf(dist)
        h = self.node_init(self.embedding(z), z, rbf, dist, edge_index)
        t = self.edge_init(h, rbf, edge_index)
        X = h.new_zeros(h.shape[0], rsh.shape[1], h.shape[1])
        for k, (gata, eqff) in enumerate(zip(self.gata, self.eqff)):
            h, X = gata(h, X, t, rsh, dist, edge_index)
            if k < len(self.htr):
                t = self.htr[k](X, t, rsh, edge_index)
            h, X = eqff(h, X)
        delta = self.displacement_head(h, X[:, :3, :])
        cell = self.lattice_head(h, inp.cell, inp.batch, inp.num_graphs)
        return RelaxOutput(pos=[inp.pos + delta], cell=[cell])
