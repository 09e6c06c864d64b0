"""Figures of a comparison: coordinate-error distribution against Dummy (paper Fig. 7) and a violin
plot of every model's per-structure coordinate MAE (paper Fig. 4). Matplotlib, Agg backend."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["error_distribution", "violin"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def error_distribution(model: Sequence[float], dummy: Sequence[float], label: str, path: str | Path,
                       bins: int = 40) -> Path:
    """Histogram of per-structure coordinate MAE of ``label`` against the Dummy (unrelaxed input)."""
    plt = _plt()
    m, d = np.asarray(model, float), np.asarray(dummy, float)
    hi = float(np.nanpercentile(np.concatenate([m, d]), 99)) if m.size + d.size else 1.0
    edges = np.linspace(0.0, max(hi, 1e-6), bins + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    ax.hist(np.clip(d, 0, hi), edges, alpha=0.55, label=f"Dummy (mean {np.nanmean(d):.3f} Å)", color="tab:gray")
    ax.hist(np.clip(m, 0, hi), edges, alpha=0.65, label=f"{label} (mean {np.nanmean(m):.3f} Å)", color="tab:blue")
    ax.set_xlabel("coordinate MAE per structure (Å)")
    ax.set_ylabel("structures")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def violin(per_model: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """One violin per model (incl. Dummy) of the per-structure coordinate MAE."""
    plt = _plt()
    labels = list(per_model)
    data = [np.asarray(per_model[k], float) for k in labels]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.6), dpi=110)
    ax.violinplot([d[~np.isnan(d)] for d in data], showmeans=True, showextrema=False)
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("coordinate MAE per structure (Å)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
