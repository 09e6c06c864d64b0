"""Evaluation engine and the relaxation metrics it accumulates.

For every structure the evaluator compares the model's last-layer prediction (r_hat, L_hat) and the
Dummy prediction (the unrelaxed input, r_u, L_u) with the relaxed target (r_tilde, L_tilde) through
:func:`e3relax.metrics.structure_metrics`: coordinate MAE ``mae_pos`` (mean over N x 3 components),
shape deviation ``shape_dev`` = ||L L^T - L~ L~^T||_F, volume error ``mae_vol`` = |det L - det L~| and
the lattice-parameter errors. Summaries are means over structures (each structure weighs the same,
as in the paper's tables); the coordinate MAE pooled over all atoms of the set (the reference's
model-selection criterion) is ``pooled_mae_pos``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from e3relax import keys as K
from e3relax.engine.data import prepare_batch
from e3relax.metrics import MAE_POS, POOLED_MAE_POS, lattice_parameters, structure_metrics

__all__ = ["RelaxMetrics", "create_evaluator", "COORD", "POOLED"]

#: name of the per-structure coordinate MAE and of the atom-pooled one (the selection metric)
COORD = MAE_POS
POOLED = POOLED_MAE_POS


def _lattice(cell: torch.Tensor) -> list[list[float]]:
    lengths, angles = lattice_parameters(cell.detach().double().cpu())
    return torch.cat([lengths, angles], dim=-1).tolist()


class RelaxMetrics(Metric):
    """Accumulates model and Dummy metrics over an evaluation run (distributed-aware).

    ``compute()`` returns a dict: ``mae_pos``, ``shape_dev``, ``mae_vol``, ... (means over structures),
    ``pooled_mae_pos`` (mean over all atoms x 3), and the same under ``dummy/``. The per-structure
    values of this process are kept in :attr:`rows` for tables and figures.
    """

    def __init__(self, output_transform: Callable = lambda x: x, device: str | torch.device = "cpu") -> None:
        self.rows: dict[str, list] = {}
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._count = 0
        self._atoms = 0
        self.rows = {}

    def _add(self, prefix: str, values: dict[str, torch.Tensor], natoms: torch.Tensor) -> None:
        for name, v in values.items():
            v = v.detach().to(torch.float64).cpu()
            self._sums[prefix + name] = self._sums.get(prefix + name, 0.0) + float(v.sum())
            self.rows.setdefault(prefix + name, []).extend(v.tolist())
        pooled = float((values[COORD].detach().double().cpu() * 3 * natoms).sum())
        self._sums[prefix + POOLED] = self._sums.get(prefix + POOLED, 0.0) + pooled

    def update(self, output: tuple) -> None:
        pos, cell, batch, *rest = output
        for name, v in (rest[0] if rest else {}).items():  # per-structure extras, e.g. uncertainty [B]
            self.rows.setdefault(name, []).extend(v.detach().double().cpu().tolist())
        natoms = torch.bincount(batch.batch, minlength=cell.shape[0]).cpu().double()
        ref_pos, ref_cell = batch[K.POS_R], batch[K.CELL_R]
        self._add("", structure_metrics(pos, cell, ref_pos, ref_cell, batch.batch), natoms)
        self._add("dummy/", structure_metrics(batch[K.POS_U], batch[K.CELL_U], ref_pos, ref_cell, batch.batch),
                  natoms)
        self._count += int(cell.shape[0])
        self._atoms += int(natoms.sum())
        ids = batch[K.ID] if K.ID in batch else [None] * cell.shape[0]
        self.rows.setdefault("id", []).extend(list(ids) if not torch.is_tensor(ids) else ids.tolist())
        self.rows.setdefault("natoms", []).extend(natoms.long().tolist())
        for prefix, c in (("lattice_pred", cell), ("lattice_ref", ref_cell), ("lattice_dummy", batch[K.CELL_U])):
            self.rows.setdefault(prefix, []).extend(_lattice(c))

    def compute(self) -> dict[str, float]:
        import ignite.distributed as idist

        names = sorted(self._sums)
        vec = torch.tensor([self._sums[n] for n in names] + [self._count, self._atoms], dtype=torch.float64)
        vec = idist.all_reduce(vec)
        count, atoms = float(vec[-2]), float(vec[-1])
        out = {}
        for name, total in zip(names, vec[:-2].tolist()):
            denom = 3 * atoms if name.endswith(POOLED) else count
            out[name] = total / denom if denom else math.nan
        return out


def create_evaluator(model: Any, device: torch.device, dtype: torch.dtype, amp: str | None = None,
                     project: Any = None) -> Engine:
    """An Ignite engine running ``model`` without gradients and accumulating :class:`RelaxMetrics`.

    ``model`` is a model (its last layer is the prediction) or a predictor with
    ``predict_batch(batch) -> (pos [N,3], cell [B,3,3], extras {name: [B]})``, such as an ensemble
    :class:`~e3relax.predict.Relaxer`. The engine's output per batch is
    ``(pred_pos, pred_cell, batch, extras)``; ``engine.state.metrics`` holds the summaries and
    ``engine.relax_metrics.rows`` the per-structure values (extras included). ``project(out, batch)``
    (``symmetry.train``) maps a model's output first.
    """
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "", None)
    predict_batch = getattr(model, "predict_batch", None)

    def step(engine: Engine, batch: Any):
        batch = prepare_batch(batch, device, dtype)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16,
                                             enabled=amp_dtype is not None and device.type == "cuda"):
            if predict_batch is not None:
                pos, cell, extras = predict_batch(batch)
            else:
                model.eval()
                out = model(batch)
                if project is not None:
                    out = project(out, batch)
                pos, cell, extras = out.final_pos, out.final_cell, {}
        return pos.to(dtype), cell.reshape(-1, 3, 3).to(dtype), batch, extras

    engine = Engine(step)
    metric = RelaxMetrics()
    metric.attach(engine, "relax")
    engine.relax_metrics = metric  # type: ignore[attr-defined]
    return engine
