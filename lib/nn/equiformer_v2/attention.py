"""EquiformerV2 graph attention, feed-forward network, Transformer block and edge-degree embedding."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch_geometric.utils import scatter, softmax

from e3relax.nn.equiformer_v2.act import RMSNormSH, SmoothLeakyReLU
from e3relax.nn.equiformer_v2.so2 import SO2Convolution
from e3relax.nn.equiformer_v2.so3 import RadialMLP, SO3Linear, SphericalLayout, rotate_from_frame, rotate_to_frame
from e3relax.nn.common import Block
from e3relax.registry import BLOCKS

__all__ = ["SO2GraphAttention", "EqV2FeedForward", "EqV2Block", "EdgeDegreeEmbedding"]


def _activation(spec: Any, lmax: int) -> nn.Module:
    return BLOCKS.build(spec, lmax=lmax)


@BLOCKS.register("so2_graph_attention")
class SO2GraphAttention(Block):
    """SO(2)-equivariant graph attention (EquiformerV2 Sec. 3.1, ``SO2EquivariantGraphAttention``).

    For edge j -> i: rotate ``[x_j || x_i]`` into the edge frame, SO(2) convolution #1 (radially
    modulated) giving values and invariant extras; attention re-normalisation
    ``a = softmax_j( w_h . SmoothLeakyReLU(LayerNorm(f_ij,h)) )``; activation (separable S2 or gate);
    SO(2) convolution #2; weight by ``a`` per head; rotate back; sum over j; per-degree projection.

    Args:
        channels: C of the input sphere features.
        hidden_channels: width after convolution #1.
        num_heads, alpha_channels, value_channels: attention heads and their widths.
        out_channels: output width.
        lmax, mmax: degree / order truncation.
        edge_channels: width of the edge embedding (radial modulation).
        activation: block spec, ``"separable_s2_activation"`` or ``"eqv2_gate_activation"``.

    Shapes:
        x: [N, S, C], edge_index: [2, E], wigner: [E, S, S], edge_attr: [E, D]  ->  [N, S, C_out]
    """

    def __init__(self, channels: int, hidden_channels: int, num_heads: int, alpha_channels: int,
                 value_channels: int, out_channels: int, lmax: int, mmax: int, edge_channels: int,
                 activation: Any = "separable_s2_activation", radial_hidden_channels: int | None = None) -> None:
        super().__init__()
        self.layout = SphericalLayout(lmax, mmax)
        self.num_heads, self.alpha_channels = num_heads, alpha_channels
        self.act = _activation(activation, lmax)
        self.num_gates = hidden_channels * self.act.num_gates_per_channel
        self.conv1 = SO2Convolution(2 * channels, hidden_channels, lmax, mmax,
                                    num_extra=num_heads * alpha_channels + self.num_gates,
                                    edge_channels=edge_channels, radial_hidden_channels=radial_hidden_channels)
        self.conv2 = SO2Convolution(hidden_channels, num_heads * value_channels, lmax, mmax)
        self.alpha_norm = nn.LayerNorm(alpha_channels)
        self.alpha_act = SmoothLeakyReLU(0.2)
        self.alpha_dot = nn.Parameter(torch.randn(num_heads, alpha_channels) / alpha_channels ** 0.5)
        self.proj = SO3Linear(num_heads * value_channels, out_channels, lmax)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, wigner: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        j, i = edge_index[0], edge_index[1]
        msg = rotate_to_frame(wigner, torch.cat([x[j], x[i]], dim=-1))
        val, extra = self.conv1(msg, edge_attr)
        alpha_feat, gates = extra.split([self.num_heads * self.alpha_channels, self.num_gates], dim=-1)
        mask = self.layout.mask.to(x.device)[None, :, None]
        val = self.act(gates, val) * mask
        val, _ = self.conv2(val)
        alpha = self.alpha_act(self.alpha_norm(alpha_feat.reshape(-1, self.num_heads, self.alpha_channels)))
        alpha = softmax((alpha * self.alpha_dot).sum(-1), i, num_nodes=x.shape[0])  # [E, H]
        val = val.reshape(val.shape[0], val.shape[1], self.num_heads, -1) * alpha[:, None, :, None]
        val = rotate_from_frame(wigner, val.reshape(val.shape[0], val.shape[1], -1))
        return self.proj(scatter(val, i, dim=0, dim_size=x.shape[0], reduce="sum"))


@BLOCKS.register("eqv2_feed_forward")
class EqV2FeedForward(Block):
    """EquiformerV2 feed-forward: per-degree linear -> activation gated by scalars of l = 0 ->
    per-degree linear.

    Paper: EquiformerV2 (Liao et al., ICLR 2024), adapted as in E3Relax Appendix C; equations in
    e3relax-spec §3.5.

    Shapes:
        x: [N, S, C]  ->  [N, S, C]
    """

    def __init__(self, channels: int, hidden_channels: int, lmax: int,
                 activation: Any = "separable_s2_activation") -> None:
        super().__init__()
        self.act = _activation(activation, lmax)
        self.gate = nn.Linear(channels, hidden_channels * self.act.num_gates_per_channel)
        self.lin1 = SO3Linear(channels, hidden_channels, lmax)
        self.lin2 = SO3Linear(hidden_channels, channels, lmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.gate(x[:, 0]), self.lin1(x)))


@BLOCKS.register("eqv2_block")
class EqV2Block(Block):
    """Pre-norm Transformer block (EquiformerV2 ``TransBlockV2``, no drop-path):
    ``x += Attn(Norm(x))``; ``x += FFN(Norm(x))``.

    Paper: EquiformerV2 (Liao et al., ICLR 2024), adapted as in E3Relax Appendix C; equations in
    e3relax-spec §3.5.

    Shapes:
        x: [N, S, C], edge_index: [2, E], wigner: [E, S, S], edge_attr: [E, D]  ->  [N, S, C]
    """

    def __init__(self, channels: int, attn_hidden_channels: int, num_heads: int, alpha_channels: int,
                 value_channels: int, ffn_hidden_channels: int, lmax: int, mmax: int, edge_channels: int,
                 activation: Any = "separable_s2_activation", radial_hidden_channels: int | None = None) -> None:
        super().__init__()
        self.norm1 = RMSNormSH(lmax, channels)
        self.attn = SO2GraphAttention(channels, attn_hidden_channels, num_heads, alpha_channels,
                                      value_channels, channels, lmax, mmax, edge_channels, activation,
                                      radial_hidden_channels)
        self.norm2 = RMSNormSH(lmax, channels)
        self.ffn = EqV2FeedForward(channels, ffn_hidden_channels, lmax, activation)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, wigner: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), edge_index, wigner, edge_attr)
        return x + self.ffn(self.norm2(x))


@BLOCKS.register("edge_degree_embedding")
class EdgeDegreeEmbedding(Block):
    """EquiformerV2 edge-degree embedding: a radial MLP of the edge embedding fills the m = 0
    coefficients of every degree in the edge frame; rotated back, summed over neighbours and divided
    by ``avg_degree``. Gives the initial l > 0 features.

    Paper: EquiformerV2 (Liao et al., ICLR 2024), adapted as in E3Relax Appendix C; equations in
    e3relax-spec §3.5.

    Shapes:
        edge_attr: [E, D], edge_index: [2, E], wigner: [E, S, S]  ->  [N, S, C]
    """

    def __init__(self, channels: int, lmax: int, edge_channels: int, avg_degree: float = 20.0,
                 radial_hidden_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.lmax, self.avg_degree = channels, lmax, float(avg_degree)
        self.layout = SphericalLayout(lmax, 0)
        self.rad = RadialMLP(edge_channels, radial_hidden_channels or edge_channels, (lmax + 1) * channels)

    def forward(self, edge_attr: torch.Tensor, edge_index: torch.Tensor, wigner: torch.Tensor,
                num_nodes: int) -> torch.Tensor:
        m0 = self.rad(edge_attr).reshape(-1, self.lmax + 1, self.channels)
        x = rotate_from_frame(wigner, self.layout.assemble([m0]))
        return scatter(x, edge_index[1], dim=0, dim_size=num_nodes, reduce="sum") / self.avg_degree
