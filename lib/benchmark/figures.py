"""Figures of a comparison: coordinate-error distribution against Dummy (paper Fig. 7), a violin
plot of every model's per-structure coordinate MAE (paper Fig. 4) and the validation curves of every
run against the training structures seen. Matplotlib, Agg backend."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["error_distribution", "violin", "learning_curves"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; return its path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    return _save(plt, fig, path)


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
    return _save(plt, fig, path)


def learning_curves(histories: Mapping[str, Mapping[int, Sequence[Sequence[float]]]], batch_size: int,
                    path: str | Path, dummy: float | None = None, title: str = "") -> Path:
    """Validation coordinate MAE of every run against the training structures seen (log axis).

    Args:
        histories: ``{label: {seed: [(optimiser step, validation coord MAE), ...]}}``; one colour per
            label, a solid line for its first seed and dashed lines for the others.
        batch_size: structures per optimiser step (the x axis is ``step * batch_size``).
        dummy: validation coordinate MAE of the unrelaxed input, drawn as a grey line when given.

    Raises:
        ValueError: when no run has a validation point.
    """
    if not any(len(h) for runs in histories.values() for h in runs.values()):
        raise ValueError("learning_curves: no run has a validation point")
    plt = _plt()
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(histories) > len(colours):
        colours = [plt.get_cmap("tab20")(k) for k in [*range(0, 20, 2), *range(1, 20, 2)]]
    for i, (label, runs) in enumerate(histories.items()):
        for j, (seed, hist) in enumerate(sorted(runs.items())):
            if not len(hist):
                continue
            arr = np.asarray(hist, float).reshape(-1, 2)
            ax.plot(np.maximum(arr[:, 0], 1) * batch_size, arr[:, 1], color=colours[i % len(colours)],
                    ls="-" if j == 0 else "--", marker="." if len(arr) < 4 else None, lw=1.2,
                    label=label if j == 0 else None)
    if dummy is not None:
        ax.axhline(dummy, color="tab:gray", lw=1, ls=":", label="Dummy")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a log axis under a decade
    ax.set_xlabel("training structures seen")
    ax.set_ylabel("validation coordinate MAE (Å)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)
