"""How far to trust a prediction: score a Relaxer on labelled data and check its uncertainty.

:func:`score_relaxer` runs a :class:`~e3relax.predict.Relaxer` (one model or an ensemble) over a
labelled LMDB split and returns per-structure rows: the coordinate MAE of the prediction (the
paper's metric, against the de-rotated, unwrapped DFT positions) next to Dummy's, the cell errors,
and the ensemble uncertainty. :func:`uncertainty_quality` then says whether the uncertainty ranks
structures by their actual error (Spearman rank correlation) and which fraction of the worst
predictions it flags (rank correlation from :func:`scipy.stats.spearmanr`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import spearmanr

__all__ = ["score_relaxer", "uncertainty_quality"]


def score_relaxer(relaxer: Any, data: Any, limit: int | None = None, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-structure errors of ``relaxer`` on a labelled dataset (LMDB path or dataset), through the one
    evaluation path :func:`e3relax.engine.evaluation.evaluate`.

    Returns:
        the table's columns: ``id``, ``natoms``, each metric (``mae_pos``, ``mae_vol``, ...), the same
        with a ``dummy_`` prefix, and ``uncertainty`` (NaN for a single model).
    """
    from e3relax.engine.data import build_dataset
    from e3relax.engine.evaluation import evaluate

    ds = build_dataset(data, relaxer.dtype) if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__") else data
    cols = evaluate(relaxer, ds, batch_size=batch_size, max_structures=limit, progress=None).columns()
    cols.setdefault("uncertainty", np.full(len(cols["id"]), np.nan))
    return cols


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
        "spearman": float(spearmanr(u, e).statistic) if n > 1 else float("nan"),
        "recall_worst": float((flagged & worst_set).sum() / k),
        "precision": float((flagged & worst_set).sum() / nf) if nf else float("nan"),
        "flagged_fraction": nf / n,
        "random_recall": nf / n,
        "error_flagged": float(e[flagged].mean()) if nf else float("nan"),
        "error_unflagged": float(e[~flagged].mean()) if nf < n else float("nan"),
        "num": n,
    }
