"""Base class of every registered model, the symmetry laws, and the one input step of every model.

Symmetry is declared by components and composed here. Every block, head and model class carries a
class-level :class:`SymmetryLaws` (``symmetry``) saying what it preserves or breaks, and optionally
``symmetry_options``: constructor options that change it (``{"transpose": {True: SymmetryLaws(...)}}``:
the laws an instance adds when its attribute ``transpose`` is True). :meth:`RelaxModel.laws`
composes the declarations of the model and all its sub-modules with :func:`compose_laws`: a law
holds when every component keeps it; a module without a declaration (``nn.Linear``, a user's own
block) is taken to keep every law, which the shared equivariance test then checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Literal, Mapping, Optional

import torch

from e3relax import keys
from e3relax.geometry import edge_vectors
from e3relax.types import RelaxOutput

__all__ = ["ZERO_INIT_LR_SCALE", "scale_lr_", "param_groups", "SymmetryLaws", "declared_laws", "compose_laws", "RelaxModel", "ModelInputs", "prepare_inputs",
           "dataset_graph", "check_graph", "GraphMismatchError"]

_TRANSLATION = ("cartesian", "fractional", "none")  # later entries override earlier ones when composed
_WRAP = ("input_cell", "predicted_cell", "none")


#: learning-rate multiplier of a zero-initialised last projection: it grows from zero to the size of
#: a default initialisation within tens of steps instead of hundreds (docs/models_e3relax.md)
ZERO_INIT_LR_SCALE = 10.0


def scale_lr_(param: torch.nn.Parameter, scale: float = ZERO_INIT_LR_SCALE) -> torch.nn.Parameter:
    """Tag ``param`` to train with ``scale`` times the run's learning rate (see :func:`param_groups`)."""
    param.lr_scale = float(scale)
    return param


def param_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """Optimiser parameter groups: one per ``lr_scale`` tag (untagged: 1), ``lr`` times the scale,
    with ``lr_scale`` kept in the group so that learning-rate schedules keep the ratio."""
    groups: dict[float, list] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(float(getattr(p, "lr_scale", 1.0)), []).append(p)
    return [{"params": ps, "lr": lr * s, "lr_scale": s} for s, ps in sorted(groups.items())]


@dataclass(frozen=True)
class SymmetryLaws:
    """The exact symmetry laws a model (or one component) promises; the shared test checks each one.

    Attributes:
        rotation: output positions and cells rotate with the input (det +1).
        reflection: the same for improper rotations (det -1).
        permutation: permuting atoms permutes the output positions, cells unchanged.
        translation: ``"cartesian"``: r + t -> r_hat + t;  ``"fractional"``: r + t -> r_hat + t L_u^-1 L_hat
            (atoms ride the predicted cell); ``"none"``: no promise.
        wrap: moving atom a by n L_u: ``"input_cell"`` -> r_hat_a + n L_u; ``"predicted_cell"`` ->
            r_hat_a + n L_hat; ``"none"``: no promise.
        broken: property -> measured error / reason, for properties the design breaks
            (the test marks exactly these as expected failures).
        approximate: property -> reason and measured error, for promised properties that hold only
            up to amplified rounding or quadrature (still within the shared test's float64 tolerance
            at the test sizes, but not to machine precision in general, e.g. in float32).
    """

    rotation: bool = True
    reflection: bool = True
    permutation: bool = True
    translation: Literal["cartesian", "fractional", "none"] = "cartesian"
    wrap: Literal["input_cell", "predicted_cell", "none"] = "input_cell"
    broken: dict[str, str] = field(default_factory=dict)
    approximate: dict[str, str] = field(default_factory=dict)


def declared_laws(module: torch.nn.Module) -> Optional[SymmetryLaws]:
    """The laws one module declares: its class's ``symmetry`` plus those of its set options (or None)."""
    base = getattr(type(module), "symmetry", None)
    options: Mapping[str, Mapping[Any, SymmetryLaws]] = getattr(type(module), "symmetry_options", {}) or {}
    extra = [table[getattr(module, attr)] for attr, table in options.items()
             if getattr(module, attr, None) in table]
    if base is None and not extra:
        return None
    return compose_laws([base or SymmetryLaws(), *extra])


def compose_laws(parts: Iterable[Optional[SymmetryLaws]], measured: Mapping[str, str] | None = None) -> SymmetryLaws:
    """Laws of a whole built from its components' declarations (None entries are ignored).

    A boolean law holds if every part keeps it; translation and wrap take the most demanding mode
    (``cartesian < fractional < none``, ``input_cell < predicted_cell < none``); a property any part
    breaks is broken, with the parts' reasons joined. ``measured`` (property -> measured error) is
    appended to the reason of each broken property.
    """
    rotation = reflection = permutation = True
    translation, wrap = "cartesian", "input_cell"
    broken: dict[str, list[str]] = {}
    approximate: dict[str, list[str]] = {}
    for p in parts:
        if p is None:
            continue
        rotation, reflection, permutation = rotation and p.rotation, reflection and p.reflection, permutation and p.permutation
        translation = max(translation, p.translation, key=_TRANSLATION.index)
        wrap = max(wrap, p.wrap, key=_WRAP.index)
        for into, source in ((broken, p.broken), (approximate, p.approximate)):
            for prop, reason in source.items():
                if reason not in into.setdefault(prop, []):
                    into[prop].append(reason)
    rotation = rotation and "rotation" not in broken
    reflection = reflection and "reflection" not in broken
    permutation = permutation and "permutation" not in broken
    translation = "none" if "translation" in broken else translation
    wrap = "none" if "wrap" in broken else wrap
    measured = measured or {}
    reasons = {prop: "; ".join(r) + (f"; measured with test_config(): {measured[prop]}" if prop in measured else "")
               for prop, r in broken.items()}
    approx = {prop: "; ".join(r) for prop, r in approximate.items() if prop not in broken}
    return SymmetryLaws(rotation, reflection, permutation, translation, wrap, reasons, approx)


class RelaxModel(torch.nn.Module):
    """A model mapping a batch of unrelaxed structures to per-layer relaxed positions and cells.

    Subclasses implement ``forward(data) -> RelaxOutput`` where ``data`` is a torch-geometric
    ``Batch`` (or a single ``Data``) with the fields of :mod:`e3relax.keys`; they read it through
    :func:`prepare_inputs`. Their symmetry is composed from their components (module docstring);
    a model class declares only what its own code (outside its blocks and heads) preserves or breaks
    in :attr:`symmetry`, and the errors measured with :meth:`test_config` in :attr:`measured_errors`.
    """

    symmetry: ClassVar[SymmetryLaws] = SymmetryLaws()
    symmetry_options: ClassVar[dict[str, dict[Any, SymmetryLaws]]] = {}
    #: property -> max error measured by the shared equivariance test with ``test_config()``
    #: (float64, weights perturbed by 0.05), quoted in the reason of a broken property
    measured_errors: ClassVar[dict[str, str]] = {}
    #: spec of the graph builder this model needs (a ``GRAPHS`` spec with the parameters that must
    #: match the data's ``graph`` metadata), or None when any graph will do
    required_graph: ClassVar[Optional[dict]] = None

    @classmethod
    def test_config(cls) -> dict:
        """Small constructor keywords used by the shared tests and smoke runs (override per model)."""
        return {}

    def graph_requirement(self) -> Optional[dict]:
        """The graph this instance needs (:attr:`required_graph` unless its options change it)."""
        return self.required_graph

    def laws(self) -> SymmetryLaws:
        """Symmetry laws of this instance, composed over the model and all its sub-modules."""
        return compose_laws((declared_laws(m) for m in self.modules()), self.measured_errors)

    def set_prior(self, prior: Optional[torch.nn.Module]) -> None:
        """Attach a composition prior (``PRIORS``) as the sub-module ``prior`` (its fitted values travel
        in the state_dict): :meth:`inputs` then hands the model the input the prior predicts, so the
        model starts from the prior and learns the residual."""
        if prior is not None and hasattr(prior, "attach_to"):
            self.prior = None
            prior.attach_to(self.laws())
        self.prior = prior

    def inputs(self, data, self_image_edges: bool = True, geometry: bool = True) -> "ModelInputs":
        """:func:`prepare_inputs`, with positions and cell mapped by the prior when one is attached."""
        prior = getattr(self, "prior", None)
        if prior is None:
            return prepare_inputs(data, self_image_edges, geometry)
        inp = prepare_inputs(data, self_image_edges, geometry=False)
        inp.pos, inp.cell = prior(inp.pos, inp.cell, inp.z, inp.batch, inp.num_graphs)
        if geometry:
            inp.vec, inp.dist = inp.edge_vectors()
        return inp

    def forward(self, data) -> RelaxOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass
class ModelInputs:
    """A batch as every model reads it.

    Shapes:
        pos: [N, 3]; cell: [B, 3, 3]; z: [N] long; batch: [N] long; edge_index: [2, E];
        cell_offsets: [E, 3]; edge_type: [E] or None; vec: [E, 3] (``r_j + k L - r_i``) and
        dist: [E], or None when built with ``geometry=False``
    """

    pos: torch.Tensor
    cell: torch.Tensor
    z: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    edge_index: torch.Tensor
    cell_offsets: torch.Tensor
    edge_type: Optional[torch.Tensor]
    vec: Optional[torch.Tensor] = None
    dist: Optional[torch.Tensor] = None

    def edge_vectors(self, pos: Optional[torch.Tensor] = None, cell: Optional[torch.Tensor] = None,
                     edge_index: Optional[torch.Tensor] = None, cell_offsets: Optional[torch.Tensor] = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Edge vectors and lengths for other positions, cell or edges (defaults: these inputs')."""
        return edge_vectors(self.pos if pos is None else pos, self.cell if cell is None else cell,
                            self.edge_index if edge_index is None else edge_index,
                            self.cell_offsets if cell_offsets is None else cell_offsets, self.batch)

    @property
    def unit(self) -> torch.Tensor:
        """Unit vectors neighbour image -> centre, ``u_ji = -vec / dist``. Shapes: [E, 3]."""
        return -self.vec / self.dist[:, None]


def prepare_inputs(data, self_image_edges: bool = True, geometry: bool = True) -> ModelInputs:
    """The one input step of every model: batch vector (zeros for an unbatched ``Data``), cell as
    ``[B, 3, 3]``, atomic numbers as long, the stored edges and their vectors.

    Args:
        data: a torch-geometric ``Batch`` or ``Data`` with the fields of :mod:`e3relax.keys`.
        self_image_edges: False drops every edge from an atom to one of its own periodic images
            (``j == i``): the six self-image edges and any radius edge ``i -> i + k L``.
        geometry: compute the edge vectors and lengths of the current positions and cell.
    """
    pos = data[keys.POS_U]
    cell = data[keys.CELL_U].reshape(-1, 3, 3)
    batch = getattr(data, keys.BATCH, None)
    if batch is None:
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
    edge_index, offsets = data[keys.EDGE_INDEX], data[keys.CELL_OFFSETS]
    edge_type = data[keys.EDGE_TYPE] if keys.EDGE_TYPE in data else None
    if not self_image_edges:
        keep = edge_index[0] != edge_index[1]
        edge_index, offsets = edge_index[:, keep], offsets[keep]
        edge_type = None if edge_type is None else edge_type[keep]
    inputs = ModelInputs(pos, cell, data[keys.Z].long(), batch, cell.shape[0], edge_index, offsets, edge_type)
    if geometry:
        inputs.vec, inputs.dist = inputs.edge_vectors()
    return inputs


def dataset_graph(dataset: Any) -> Optional[dict]:
    """The graph-builder params a dataset's records were built with (LMDB metadata), or None if unknown.

    Looks through ``Subset`` (``.dataset``) and ``ConcatDataset`` (``.datasets``; all parts must agree).
    """
    if hasattr(dataset, "datasets"):
        graphs = [dataset_graph(d) for d in dataset.datasets]
        known = [g for g in graphs if g is not None]
        return known[0] if known and all(g == known[0] for g in known) and len(known) == len(graphs) else None
    if hasattr(dataset, "dataset") and not hasattr(dataset, "metadata"):
        return dataset_graph(dataset.dataset)
    graph = (getattr(dataset, "metadata", None) or {}).get("graph")
    return dict(graph) if isinstance(graph, Mapping) else None


class GraphMismatchError(ValueError):
    """A model needs data converted with another graph builder than the one the data used."""


def check_graph(model: Any, dataset: Any, what: str = "dataset") -> None:
    """Refuse a dataset whose graph differs from the one ``model.graph_requirement()`` asks for.

    Every key of the requirement must equal the data's recorded graph params. Data without graph
    metadata (in-memory datasets) cannot be checked and pass.

    Raises:
        GraphMismatchError: naming the model, the data, the differing settings and what to do.
    """
    required = getattr(model, "graph_requirement", lambda: None)()
    graph = dataset_graph(dataset) if required else None
    if not required or graph is None:
        return
    diff = {k: (v, graph.get(k)) for k, v in required.items() if graph.get(k) != v}
    if diff:
        name = getattr(type(model), "registry_name", type(model).__name__)
        detail = ", ".join(f"{k}: needs {v!r}, data has {g!r}" for k, (v, g) in diff.items())
        opts = "".join(f" --graph-opt {k}={str(v).lower() if isinstance(v, bool) else v}"
                       for k, v in required.items() if k != "name")
        raise GraphMismatchError(
            f"{what}: model '{name}' needs data converted with the graph {required} ({detail}). "
            f"Convert the structures again with `e3relax data convert ... --graph {required.get('name')}{opts}`, "
            f"or use a model that accepts this graph."
        )
