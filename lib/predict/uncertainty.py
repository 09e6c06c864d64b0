"""How far to trust a prediction: score a Relaxer on labelled data and check its uncertainty.

:func:`score_relaxer` runs a :class:`~e3relax.predict.Relaxer` (one model or an ensemble) over a
labelled LMDB split and returns per-structure rows: the coordinate MAE of the prediction (the
paper's metric, against the de-rotated, unwrapped DFT positions) next to Dummy's, the cell errors,
and the ensemble uncertainty. :func:`uncertainty_quality` then says whether the uncertainty ranks
structures by their actual error (Spearman rank correlation) and which fraction of the worst
predictions it flags.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from e3relax import keys

__all__ = ["score_relaxer", "uncertainty_quality", "spearman"]


def score_relaxer(relaxer: Any, data: Any, limit: int | None = None, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-structure errors of ``relaxer`` on a labelled dataset (LMDB path or sequence of Data).

    Vacuum handling is off (``vacuum_threshold=None``): only ``pbc`` False directions are kept.

    Returns:
        columns ``id``, ``natoms``, ``mae_pos``, ``dummy_mae_pos``, ``mae_vol``, ``dummy_mae_vol``,
        ``uncertainty`` (NaN for a single model), ``volume_change``, ``unphysical``.
    """
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.metrics import MAE_POS, MAE_VOL, structure_metrics
    from e3relax.structures import arrays_to_atoms

    ds = LmdbDataset(data) if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__") else data
    n = len(ds) if limit is None else min(limit, len(ds))
    labels, items = [], []
    for i in range(n):
        d = ds[i]
        atoms = arrays_to_atoms(d[keys.POS_U].double().numpy(), d[keys.CELL_U][0].double().numpy(),
                                d[keys.Z].numpy(), d[keys.PBC].reshape(3).numpy())
        labels.append(d)
        items.append((str(d[keys.ID]), atoms))
    cols: dict[str, list] = {k: [] for k in ("id", "natoms", "mae_pos", "dummy_mae_pos", "mae_vol", "dummy_mae_vol",
                                             "uncertainty", "volume_change", "unphysical")}
    for d, res in zip(labels, relaxer.iter_relax(items, batch_size=batch_size, vacuum_threshold=None)):
        if "error" in res:
            continue
        pred = res["final_structure"]
        ref_pos, ref_cell = d[keys.POS_R].double(), d[keys.CELL_R].double()
        batch = torch.zeros(len(ref_pos), dtype=torch.long)
        m = structure_metrics(torch.as_tensor(pred.positions), torch.as_tensor(pred.cell.array)[None], ref_pos,
                              ref_cell, batch)
        du = structure_metrics(d[keys.POS_U].double(), d[keys.CELL_U].double(), ref_pos, ref_cell, batch)
        cols["id"].append(res["id"])
        cols["natoms"].append(res["num_atoms"])
        cols["mae_pos"].append(float(m[MAE_POS][0]))
        cols["dummy_mae_pos"].append(float(du[MAE_POS][0]))
        cols["mae_vol"].append(float(m[MAE_VOL][0]))
        cols["dummy_mae_vol"].append(float(du[MAE_VOL][0]))
        cols["uncertainty"].append(np.nan if res["uncertainty"] is None else res["uncertainty"])
        cols["volume_change"].append(res["volume_change"])
        cols["unphysical"].append(bool(res["unphysical"]))
    return {k: np.asarray(v) for k, v in cols.items()}


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for v in np.unique(x):  # average ranks of ties
        tie = x == v
        if tie.sum() > 1:
            r[tie] = r[tie].mean()
    return r


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (ties get average ranks)."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def uncertainty_quality(uncertainty: np.ndarray, error: np.ndarray, worst: float = 0.1,
                        threshold: float | None = None) -> dict[str, float]:
    """How well ``uncertainty`` ranks ``error``.

    Args:
        uncertainty, error: per structure.
        worst: the fraction of structures with the largest error that counts as "worst".
        threshold: flag structures with uncertainty above this; default: flag the same number of
            structures as there are "worst" ones (the top ``worst`` fraction by uncertainty).

    Returns:
        ``spearman``; ``recall_worst`` (fraction of the worst structures flagged); ``precision``
        (fraction of flagged structures among the worst); ``flagged_fraction``; ``random_recall``
        (what flagging at random would catch); ``error_flagged`` / ``error_unflagged`` (mean error).
    """
    u, e = np.asarray(uncertainty, dtype=np.float64), np.asarray(error, dtype=np.float64)
    n = len(e)
    k = max(1, int(round(worst * n)))
    worst_set = np.zeros(n, dtype=bool)
    worst_set[np.argsort(-e, kind="stable")[:k]] = True
    if threshold is None:
        flagged = np.zeros(n, dtype=bool)
        flagged[np.argsort(-u, kind="stable")[:k]] = True
    else:
        flagged = u > threshold
    nf = int(flagged.sum())
    return {
        "spearman": spearman(u, e),
        "recall_worst": float((flagged & worst_set).sum() / k),
        "precision": float((flagged & worst_set).sum() / nf) if nf else float("nan"),
        "flagged_fraction": nf / n,
        "random_recall": nf / n,
        "error_flagged": float(e[flagged].mean()) if nf else float("nan"),
        "error_unflagged": float(e[~flagged].mean()) if nf < n else float("nan"),
        "num": n,
    }
