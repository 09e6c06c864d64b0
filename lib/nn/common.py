"""Small shared pieces of the scalar-vector blocks: activation, stacked linears, the layer state.

Feature layouts used by every block:
    atom scalars ``s: [N, F]``; atom vectors ``v: [N, 3(xyz), F]``;
    lattice-node scalars ``y: [B, 3(c), F]``; lattice-node vectors ``ybar: [B, 3(c), 3(xyz), F]``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from e3relax.model_base import SymmetryLaws


class Block(nn.Module):
    """Base class of every registered block and head.

    Class-level declarations (read by :meth:`e3relax.model_base.RelaxModel.laws` and by
    :class:`~e3relax.models.relax_net.RelaxNet` when it is built):

    * ``symmetry``: the :class:`~e3relax.model_base.SymmetryLaws` the block keeps or breaks
      (default: keeps every law);
    * ``symmetry_options``: ``{attribute: {value: SymmetryLaws}}`` for options that change it;
    * ``reads`` / ``writes``: the :class:`LayerState` fields its ``step(state)`` reads and writes
      (``reads = None``: not a stack block, or not declared, so not checked).
    """

    symmetry: ClassVar[SymmetryLaws] = SymmetryLaws()
    symmetry_options: ClassVar[dict[str, dict[Any, SymmetryLaws]]] = {}
    reads: ClassVar[Optional[tuple[str, ...]]] = None
    writes: ClassVar[tuple[str, ...]] = ()


log = logging.getLogger(__name__)

_KERNELS: dict[str, Callable] = {}
_COMPILED: dict[str, Callable] = {}


def kernel(fn: Callable) -> Callable:
    """Mark a pure tensor function as an edge-heavy kernel that :func:`use_compiled_kernels` may
    replace by its ``torch.compile``-d version (one compiled graph shared by every layer/model)."""
    _KERNELS[fn.__name__] = fn

    def call(*args):
        compiled = _COMPILED.get(fn.__name__)
        if compiled is None:
            return fn(*args)
        try:
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - no compiler here, or an op it cannot compile
            _COMPILED.pop(fn.__name__, None)
            log.warning("kernel %s does not compile here (%s: %s); it runs eagerly from now on", fn.__name__,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return fn(*args)

    call.__name__, call.__doc__, call.eager = fn.__name__, fn.__doc__, fn
    return call


def use_compiled_kernels(enabled: bool = True, dynamic: Optional[bool] = None) -> None:
    """Opt in to ``torch.compile`` of the edge-heavy kernels (message, radial basis, edge geometry).

    Parameter names and results are unchanged (to float rounding). The first call of each kernel
    pays its compilation (tens of seconds on one CPU core). ``dynamic=None`` (torch's automatic
    mode) recompiles once with symbolic sizes when the number of atoms or edges changes, and keeps
    integer settings (number of radial functions, envelope exponent) static. A kernel that fails to
    compile (no C compiler, an unsupported op) logs one warning and runs eagerly. Training compiles
    by default on long runs (``compile_kernels: auto``); measured in benchmarks/train_throughput.py.
    """
    _COMPILED.clear()
    if enabled:
        for name, fn in _KERNELS.items():
            _COMPILED[name] = torch.compile(fn, dynamic=dynamic)


class ScaledSiLU(nn.Module):
    """``SiLU(x) / 0.6``, the activation of the OCP PaiNN lineage and E3Relax (keeps unit variance
    for unit-normal inputs). The toolkit's only copy."""

    @staticmethod
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x) * (1.0 / 0.6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class StackedLinear(nn.Module):
    """``S`` independent linear maps stored as one ``[S, out, in]`` weight.

    ``S = 3`` gives one parameter set per lattice vector (the reference); ``S = 1`` shares one
    set across the three lattice nodes (broadcast when applied along a lattice axis of size 3).

    Shapes:
        forward(x [..., in], index=c) -> [..., out] using set ``c`` (or the shared set);
        forward(x [..., 3, in]) -> [..., 3, out] applying set ``c`` to slice ``c`` of axis -2.
    """

    def __init__(self, num_stacks: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.num_stacks = num_stacks
        self.weight = nn.Parameter(torch.empty(num_stacks, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_stacks, out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's ``nn.Linear`` default per stack (the reference initialisation)."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        for w in self.weight:
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, index: Optional[int] = None) -> torch.Tensor:
        if index is not None:
            k = min(index, self.num_stacks - 1)
            return nn.functional.linear(x, self.weight[k], None if self.bias is None else self.bias[k])
        if self.num_stacks == 1:  # shared parameters: one plain linear over the lattice axis
            return nn.functional.linear(x, self.weight[0], None if self.bias is None else self.bias[0])
        out = torch.einsum("...si,soi->...so", x, self.weight)
        return out if self.bias is None else out + self.bias


class StackedMLP(nn.Module):
    """A multilayer perceptron of :class:`StackedLinear` layers with ScaledSiLU between them.

    Args:
        num_stacks: 1 (shared) or 3 (one per lattice vector).
        dims: layer widths, e.g. ``[2F, F, 3F]``.
        act_last: also apply the activation after the last linear (the reference's MLP_loc, MLP_glob).
    """

    def __init__(self, num_stacks: int, dims: list[int], act_last: bool = False) -> None:
        super().__init__()
        self.linears = nn.ModuleList(StackedLinear(num_stacks, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = ScaledSiLU()
        self.act_last = act_last

    def forward(self, x: torch.Tensor, index: Optional[int] = None) -> torch.Tensor:
        for k, lin in enumerate(self.linears):
            x = lin(x, index)
            if k < len(self.linears) - 1 or self.act_last:
                x = self.act(x)
        return x


def mlp(dims: list[int], act_last: bool = False, bias: bool = True,
        activation: Callable[[], nn.Module] = ScaledSiLU) -> nn.Sequential:
    """The one MLP builder: ``Linear -> act -> ... -> Linear`` (``-> act`` with ``act_last``).

    ``activation`` is a module class (``ScaledSiLU``, the OCP/E3Relax default; ``nn.SiLU`` for the
    EGNN/HEGNN/GotenNet lineage). Linears keep PyTorch's default initialisation (the reference);
    callers re-initialise where their original does. Module indices: linears at even positions.

    Shapes:
        x: [..., dims[0]] -> [..., dims[-1]]
    """
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b, bias=bias))
        if k < len(dims) - 2 or act_last:
            layers.append(activation())
    return nn.Sequential(*layers)


def xavier_(module: nn.Module) -> nn.Module:
    """Xavier-uniform weights and zero biases for every ``nn.Linear`` inside ``module`` (in place)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def linear(a: int, b: int, bias: bool = True) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default initialisation (as the reference)."""
    return nn.Linear(a, b, bias=bias)


def vector_norm(v: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """``sqrt(sum v^2 + eps)`` along the Cartesian axis (smooth at zero, as the reference)."""
    return torch.sqrt(torch.sum(v * v, dim=dim) + eps)


INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_3 = 1.0 / math.sqrt(3.0)


@dataclass
class LayerState:
    """Everything a block of a :class:`~e3relax.models.relax_net.RelaxNet` stack reads or writes.

    Blocks implement ``step(state)`` that updates fields in place; the stack recomputes the edge
    geometry (``edge_rbf``, ``edge_unit``) from the current ``pos`` and ``cell`` at each layer.

    Shapes:
        pos: [N, 3]; cell: [B, 3, 3]; pos_u: [N, 3]; cell_u: [B, 3, 3]; batch: [N]; z: [N];
        edge_index: [2, E]; cell_offsets: [E, 3]; s: [N, F]; v: [N, 3, F];
        y: [B, 3, F] or None; ybar: [B, 3, 3, F] or None; edge_rbf: [E, K]; edge_unit: [E, 3]
    """

    pos: torch.Tensor
    cell: torch.Tensor
    pos_u: torch.Tensor
    cell_u: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    z: torch.Tensor
    edge_index: torch.Tensor
    cell_offsets: torch.Tensor
    radial: nn.Module
    s: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None
    y: Optional[torch.Tensor] = None
    ybar: Optional[torch.Tensor] = None
    edge_rbf: Optional[torch.Tensor] = None
    edge_unit: Optional[torch.Tensor] = None
    refine: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


#: LayerState fields a stack provides before any block runs (edge geometry is set at the start of
#: every layer, before its blocks)
PROVIDED_FIELDS = ("pos", "cell", "pos_u", "cell_u", "batch", "num_graphs", "z", "edge_index", "cell_offsets",
                   "radial", "refine", "extras", "edge_rbf", "edge_unit")
