"""Relax structures with a trained model: the :class:`Relaxer` Python API.

Example::

    from e3relax.predict import Relaxer
    relaxer = Relaxer.from_checkpoint("pnictides")          # shipped, or a .pt / run folder
    result = relaxer.relax(atoms, return_trajectory=True)   # ase.Atoms or pymatgen Structure
    relaxed = result["final_structure"]                     # same type as the input
    result["uncertainty"], result["flags"], result["trajectory"].cells

``relax`` mirrors the result of CHGNet's / MatGL's ``relax()``: a dict with ``final_structure``
and ``trajectory`` (here one frame per model layer: the input, then each refinement step).
With several checkpoints (a shipped ensemble) the prediction is the members' mean and
``uncertainty`` their spread: the RMS distance of the members' final positions from the mean (A).

By default every input is predicted in its canonical frame (primitive cell, reduced basis, atom 0 at
the origin: :mod:`~e3relax.predict.canonical`) and every layer is projected onto the input's
space-group operations (:mod:`~e3relax.predict.symmetry`), then mapped back into the user's basis,
atom order and origin; ``symmetry=False`` / ``canonical=False`` turn these off, ``symprec`` (A) is
spglib's tolerance.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from e3relax import keys
from e3relax.predict.geometry import SanityLimits, close_contacts, keep_vacuum, min_distance, \
    restore_nonfinite, sanity_flags, vacuum_directions
from e3relax.predict.prepare import FrameSettings, Prepared, prepare
from e3relax.predict.results import RelaxTrajectory, structure_like
from e3relax.predict.symmetry import DEFAULT_SYMPREC, check_symprec
from e3relax.structures import as_atoms

__all__ = ["Relaxer", "RelaxTrajectory", "structure_like", "SMALL_BATCH_EDGES"]

log = logging.getLogger(__name__)

#: the error of an input on which the model's output holds a NaN or an infinity
NONFINITE_ERROR = "the model's prediction is not finite (NaN or infinity): the model diverged on it"

#: a CPU forward pass over fewer edges than this runs on one thread: on small graphs the other
#: threads only wait (and, on a busy machine, spin), which costs more than it gains
SMALL_BATCH_EDGES = 100_000


def _threads_for(batch: Any):
    """One torch thread for a small CPU batch."""
    from e3relax.threads import single_thread_if

    edges = batch[keys.EDGE_INDEX] if keys.EDGE_INDEX in batch else None
    return single_thread_if(edges is not None and edges.device.type == "cpu" and edges.shape[-1] < SMALL_BATCH_EDGES)


class Relaxer:
    """Predict relaxed structures with one model or an ensemble of models of the same task.

    Args:
        models: trained models (eval mode), all on ``device`` in ``dtype``.
        graph: graph-builder settings the models' training data used.
        limits: when predictions are flagged unphysical.
        device: torch device.
        dtype: float precision of the forward pass.
        names: where each model came from (for logs).
        symmetry: project every predicted layer onto the input's space-group operations (default on).
        canonical: predict in the canonical frame (primitive cell, reduced basis, atom 0 at the
            origin) and map back into the user's (default on).
        symprec: spglib tolerance (A) for both; default 0.01, as ASE's ``FixSymmetry``.
        train_elements: atomic numbers the models were trained on (a structure holding any other is
            flagged ``unseen_elements``); None: not known (older checkpoints), nothing flagged.

    Raises:
        InputError: for ``symprec <= 0``.
    """

    def __init__(self, models: Sequence[torch.nn.Module], graph: dict[str, Any], limits: SanityLimits | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 names: Sequence[str] | None = None, symmetry: bool = True, canonical: bool = True,
                 symprec: float = DEFAULT_SYMPREC, train_elements: Iterable[int] | None = None) -> None:
        from e3relax.registry import GRAPHS

        if not models:
            raise ValueError("Relaxer needs at least one model")
        self.models = list(models)
        self.graph_spec = dict(graph)
        self.graph = GRAPHS.build(dict(graph))
        self.limits = limits or SanityLimits()
        self.device = torch.device(device)
        #: per-structure columns :meth:`predict_batch` adds to an evaluation table
        self.extra_columns = ("non_finite", "uncertainty") if len(self.models) > 1 else ("non_finite",)
        self.dtype = dtype
        self.names = list(names or [f"model{i}" for i in range(len(models))])
        self.frames = FrameSettings(bool(symmetry), bool(canonical), check_symprec(symprec))
        self.train_elements = None if train_elements is None else frozenset(int(z) for z in train_elements)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | Sequence[str | Path], device: str = "cpu",
                        dtype: torch.dtype | None = None, weights: str = "ema", ensemble: bool = True,
                        limits: SanityLimits | None = None, symmetry: bool = True, canonical: bool | None = None,
                        symprec: float = DEFAULT_SYMPREC) -> "Relaxer":
        """Load a checkpoint file, run folder or pretrained name (``e3relax pretrained`` lists them).

        Args:
            checkpoint: path, run folder, pretrained name, or a list of these (an ensemble).
            device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
            dtype: default: the run's dtype.
            weights: ``ema`` (default) or ``model``.
            ensemble: use every member of a pretrained ensemble (False: the first only, faster).
            limits: flag thresholds; default: the checkpoint's recorded training range.
            symmetry, canonical, symprec: as for :class:`Relaxer`; ``canonical=None`` (the default)
                predicts in the frame the checkpoint was trained in: the user's own frame when it
                was trained on pairs in their datasets' cells (its record says ``dataset``; the
                canonical frame would show it inputs unlike its training data), else the canonical
                one (pairs converted with ``--canonical-frame``, or a checkpoint that records no frame).
        """
        from e3relax.device import resolve_device
        from e3relax.engine.checkpoint import load_checkpoint, model_from_checkpoint
        from e3relax.predict.pretrained import graph_spec, resolve_checkpoints

        symprec = check_symprec(symprec)  # before any model loads

        device = resolve_device(device)
        files = resolve_checkpoints(checkpoint)
        if not ensemble:
            files = files[:1]
        models, graphs, stats, seen = [], [], {}, []
        for f in files:
            ckpt = load_checkpoint(f)
            model, _ = model_from_checkpoint(ckpt, weights=weights, device=device, dtype=dtype)
            models.append(model)
            graphs.append(graph_spec(ckpt))
            stats = stats or dict(ckpt.get("predict") or {})
            seen.append(ckpt.get("train_elements"))
        dt = next((p.dtype for p in models[0].parameters()), dtype or torch.float32)
        if any(g != graphs[0] for g in graphs[1:]):
            raise ValueError(f"checkpoints {[str(f) for f in files]} were trained on different graph settings")
        if limits is None:
            limits = SanityLimits()
            if "volume_ratio" in stats:
                lo, hi = stats["volume_ratio"]
                limits.volume_ratio = (0.8 * float(lo), 1.25 * float(hi))
            if len(files) > 1 and stats.get("uncertainty_threshold") is not None:
                limits.uncertainty = float(stats["uncertainty_threshold"])
        elements = None if any(e is None for e in seen) else set.intersection(*(set(map(int, e)) for e in seen))
        if canonical is None:  # the training frame: the export's record, else the run's, else canonical
            canonical = (stats.get("frame") or ckpt.get("train_frame") or "canonical") != "dataset"
        return cls(models, graphs[0], limits, device, dt, [str(f) for f in files], symmetry, canonical, symprec,
                   elements)

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def _forward(self, batch: Any
                 ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None, torch.Tensor]:
        """Ensemble-mean per-layer positions / cells, per-atom spread (None for one model) and which
        structures' outputs were not finite ([B] bool; their input is returned in every layer)."""
        with _threads_for(batch):
            outs = [m(batch) for m in self.models]
        nl = min(o.num_layers for o in outs)
        pos = [torch.stack([o.pos[o.num_layers - nl + t] for o in outs]).mean(0) for t in range(nl)]
        cell = [torch.stack([o.cell[o.num_layers - nl + t] for o in outs]).mean(0) for t in range(nl)]
        spread = None
        if len(outs) > 1:
            final = torch.stack([o.final_pos for o in outs])  # [M, N, 3]
            spread = (final - final.mean(0)).pow(2).sum(-1).mean(0)  # [N] mean squared distance
        pos, cell, bad = restore_nonfinite(pos, cell, batch[keys.POS_U], batch[keys.CELL_U], batch[keys.BATCH])
        if bool(bad.any()):
            ids = batch[keys.ID] if keys.ID in batch else [f"#{i}" for i in range(len(bad))]
            log.warning("non-finite prediction (the model diverged) for %s: the input is returned instead",
                        ", ".join(str(ids[i]) for i in bad.nonzero().flatten().tolist()))
        return pos, cell, spread, bad

    @torch.no_grad()
    def predict_batch(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Last-layer prediction of a collated batch with graphs, for :func:`e3relax.engine.evaluation.evaluate`.

        Unless framing and projection are both off, each structure is taken out of the batch and
        predicted as :meth:`relax` would (canonical frame, projection, back into its own frame).

        Returns:
            (pos [N, 3], cell [B, 3, 3], extras): ``extras["non_finite"]`` [B] is 1 where the model's
            output was not finite (the input stands as the prediction there, and is scored as such);
            ``extras["uncertainty"]`` [B] is the RMS distance of the members' final positions from
            their mean (A), for an ensemble only.
        """
        from e3relax.metrics import structures_from_batch

        if self.frames.off:
            pos_t, cell_t, spread, bad = self._forward(batch)
            pos, cell = pos_t[-1], cell_t[-1]
        else:
            pbc = batch[keys.PBC].reshape(-1, 3) if keys.PBC in batch else None
            structures = structures_from_batch(batch[keys.POS_U], batch[keys.CELL_U].reshape(-1, 3, 3), batch[keys.Z],
                                               batch[keys.BATCH], pbc)
            ids = batch[keys.ID] if keys.ID in batch else [f"#{i}" for i in range(len(structures))]
            prepared = [self._prepare(a, str(i)) for a, i in zip(structures, ids)]
            results = self._predict_prepared([p for p, _ in prepared], [d for _, d in prepared])
            like = batch[keys.POS_U]
            pos = torch.cat([torch.as_tensor(r[0][-1]) for r in results]).to(like.device, like.dtype)
            cell = torch.stack([torch.as_tensor(r[1][-1]) for r in results]).to(like.device, like.dtype)
            spread = None if results[0][2] is None else \
                torch.cat([torch.as_tensor(r[2]) for r in results]).to(like.device, like.dtype)
            bad = torch.tensor([r[3] for r in results], device=like.device)
        extras = {"non_finite": bad.to(cell.dtype)}
        if spread is not None:
            from torch_geometric.utils import scatter

            extras["uncertainty"] = scatter(spread, batch[keys.BATCH], dim=0, dim_size=cell.shape[0],
                                            reduce="mean").sqrt()
        return pos, cell, extras

    def _prepare(self, atoms: Any, sid: str) -> tuple[Prepared, Any]:
        """The framed input and its graph ``Data``; raises ValueError / TypeError for an invalid input."""
        from e3relax.records import structure_to_data

        prep = prepare(atoms, self.frames, sid)
        return prep, structure_to_data(prep.atoms, self.graph, sid=sid, dtype=self.dtype)

    def _predict_prepared(self, prepared: Sequence[Prepared], datas: Sequence[Any]
                          ) -> list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None, bool]]:
        """One forward pass over prepared inputs: per input, the per-layer positions [N, 3] and cells
        [3, 3] (projected, in the user's frame, float64), the per-atom ensemble spread [N] (or None)
        and whether the model's output was not finite (then the layers hold the input)."""
        from e3relax.records import collate

        batch = collate(list(datas)).to(self.device)
        for k in (keys.POS_U, keys.CELL_U):
            batch[k] = batch[k].to(self.dtype)
        pos, cell, spread, bad = self._forward(batch)
        pos = [p.double().cpu().numpy() for p in pos]
        cell = [c.double().cpu().numpy() for c in cell]
        spread = None if spread is None else spread.double().cpu().numpy()
        ptr = batch.ptr.tolist()
        out = []
        for b, prep in enumerate(prepared):
            sl = slice(ptr[b], ptr[b + 1])
            layers = prep.layers_to_user([p[sl] for p in pos], [c[b] for c in cell])
            out.append(([x for x, _ in layers], [c for _, c in layers],
                        None if spread is None else prep.frame.values_to_user(spread[sl]), bool(bad[b])))
        return out

    def _finish(self, structure: Any, sid: str, pos_t: list[np.ndarray], cell_t: list[np.ndarray],
                spread: np.ndarray | None, deform_vacuum: bool, vacuum_threshold: float | None,
                return_trajectory: bool) -> dict[str, Any]:
        atoms = as_atoms(structure)
        pos_u, cell_u = atoms.get_positions(), atoms.cell.array
        pbc = np.asarray(atoms.pbc, dtype=bool)
        vac = vacuum_directions(pos_u, cell_u, pbc, vacuum_threshold)
        if not deform_vacuum and vac.any():
            fixed = [keep_vacuum(p, c, cell_u, vac) for p, c in zip(pos_t, cell_t)]
            pos_t, cell_t = [f[0] for f in fixed], [f[1] for f in fixed]
        pos, cell = pos_t[-1], cell_t[-1]
        vol_in = abs(np.linalg.det(cell_u))
        ratio = abs(np.linalg.det(cell)) / vol_in if vol_in > 0 else float("nan")
        unc = None if spread is None else float(np.sqrt(spread.mean()))
        nclose = close_contacts(pos, cell, pbc, atoms.numbers, self.limits.contact_factor)
        flags = sanity_flags(nclose, ratio, unc, self.limits)
        unseen = self.unseen_elements(atoms.numbers)
        if unseen:
            flags.append("unseen_elements")
        traj = None
        if return_trajectory:
            traj = RelaxTrajectory([pos_u] + list(pos_t), [cell_u] + list(cell_t), atoms.numbers.copy(), pbc)
        return {
            "final_structure": structure_like(structure, pos, cell),
            "trajectory": traj,
            "id": sid,
            "num_atoms": len(atoms),
            "volume_change": float(ratio - 1.0),
            "max_displacement": float(np.linalg.norm(pos - pos_u, axis=1).max()) if len(pos) else 0.0,
            "min_distance": min_distance(pos, cell, pbc),
            "uncertainty": unc,
            "vacuum_directions": [int(k) for k in np.flatnonzero(vac)],
            "unseen_elements": unseen,
            "flags": flags,
            "unphysical": bool(flags),
        }

    def unseen_elements(self, numbers: Iterable[int]) -> list[str] | None:
        """Symbols of the elements in ``numbers`` that no model was trained on (None: not known)."""
        if self.train_elements is None:
            return None
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in sorted(set(int(n) for n in numbers) - self.train_elements)]

    def iter_relax(self, items: Iterable[tuple[str, Any]], batch_size: int = 16, return_trajectory: bool = False,
                   deform_vacuum: bool = False, vacuum_threshold: float | None = 7.0) -> Iterator[dict[str, Any]]:
        """Relax ``(id, structure)`` pairs in batches, yielding one result per input in order.

        An input that fails validation, or on which the model's output is not finite, yields
        ``{"id": ..., "error": reason}`` instead.
        """
        pending: list[tuple[str, Any, Any]] = []

        def flush() -> Iterator[dict[str, Any]]:
            good = [(k, s, x, d) for k, (s, x, d) in enumerate(pending) if not isinstance(d, Exception)]
            results: dict[int, dict[str, Any]] = {}
            if good:
                preds = self._predict_prepared([d[0] for *_, d in good], [d[1] for *_, d in good])
                for (k, sid, x, _), (pos_t, cell_t, spread, bad) in zip(good, preds):
                    results[k] = {"id": sid, "error": f"structure '{sid}': {NONFINITE_ERROR}"} if bad else \
                        self._finish(x, sid, pos_t, cell_t, spread, deform_vacuum, vacuum_threshold,
                                     return_trajectory)
            for k, (sid, _, d) in enumerate(pending):
                yield {"id": sid, "error": str(d)} if isinstance(d, Exception) else results[k]
            pending.clear()

        for sid, x in items:
            try:
                data = self._prepare(as_atoms(x), sid)
            except (ValueError, TypeError) as exc:
                data = exc
            pending.append((sid, x, data))
            if sum(not isinstance(d, Exception) for _, _, d in pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def relax(self, x: Any, return_trajectory: bool = False, batch_size: int = 16, deform_vacuum: bool = False,
              vacuum_threshold: float | None = 7.0) -> dict[str, Any] | list[dict[str, Any]]:
        """Predict the relaxed structure(s) of an ``ase.Atoms``, a pymatgen ``Structure`` or a list.

        Args:
            x: one structure or a list of structures (types may be mixed; each result keeps its type).
            return_trajectory: attach a :class:`RelaxTrajectory` (input + one frame per layer).
            batch_size: structures per forward pass.
            deform_vacuum: also apply the predicted strain along vacuum / non-periodic directions.
            vacuum_threshold: an empty gap wider than this (A) marks a vacuum direction; None: only
                ``pbc`` False does.

        Returns:
            one result dict per structure: ``final_structure``, ``trajectory`` (or None), ``id``,
            ``num_atoms``, ``volume_change`` (predicted V/V0 - 1), ``max_displacement`` (A),
            ``min_distance`` (A), ``uncertainty`` (A; None for one model), ``vacuum_directions``,
            ``unseen_elements`` (symbols absent from the training data; None when the checkpoint
            does not record them), ``flags`` and ``unphysical``.

        Raises:
            ValueError: for an invalid input, or one on which the model's output is not finite, naming
                it by position and formula (``structure '#1 NaCl'``).
        """
        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        out = []
        for r in self.iter_relax(((_input_name(i, s), s) for i, s in enumerate(items)), batch_size,
                                 return_trajectory, deform_vacuum, vacuum_threshold):
            if "error" in r:
                raise ValueError(r["error"])
            out.append(r)
        return out[0] if single else out


def _input_name(index: int, structure: Any) -> str:
    """``#<index> <formula>``: how :meth:`Relaxer.relax` names an input in results and errors."""
    try:
        formula = as_atoms(structure).get_chemical_formula(mode="metal")
    except Exception:  # noqa: BLE001 - the real error is raised when the input is converted
        formula = type(structure).__name__
    return f"#{index} {formula}"
