"""Figures of a comparison: coordinate-error distribution against Dummy (paper Fig. 7), a violin
plot of every model's per-structure coordinate MAE (paper Fig. 4) and the validation curves of every
run against the training structures seen. Matplotlib, Agg backend."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["error_distribution", "violin", "learning_curves", "robust_upper"]


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
                       bins: int | None = None) -> Path:
    """Histogram of per-structure coordinate MAE of ``label`` against the Dummy (unrelaxed input).

    The x axis ends at :func:`robust_upper`; larger values are counted in the last bin (said in the
    title). ``bins`` defaults to about 2 sqrt(N), between 10 and 40.
    """
    plt = _plt()
    m, d = np.asarray(model, float), np.asarray(dummy, float)
    m, d = m[np.isfinite(m)], d[np.isfinite(d)]
    hi = robust_upper([m, d])
    bins = bins or int(np.clip(2 * np.sqrt(max(m.size, d.size, 1)), 10, 40))
    edges = np.linspace(0.0, hi, bins + 1)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=110)
    ax.hist(np.clip(d, 0, hi), edges, alpha=0.55, label=f"Dummy (mean {np.mean(d):.3f} Å)", color="tab:gray")
    ax.hist(np.clip(m, 0, hi), edges, alpha=0.65, label=f"{label} (mean {np.mean(m):.3f} Å)", color="tab:blue")
    over = int((m > hi).sum() + (d > hi).sum())
    ax.set_xlabel("coordinate MAE per structure (Å)")
    if over:
        ax.set_title(f"{over} value(s) above {hi:.2g} Å counted in the last bin", fontsize=8)
    ax.set_ylabel("structures")
    ax.legend(fontsize=8, frameon=False)
    return _save(plt, fig, path)


def robust_upper(arrays: Sequence[Sequence[float]], fence: float = 3.0, pad: float = 1.05) -> float:
    """Upper axis limit driven by the bulk of the data: ``pad`` x the largest value, over the series,
    that lies within Tukey's far-out fence (Q3 + ``fence`` x IQR) of its own series, so one far
    outlier cannot flatten every other series while long tails stay in view."""
    tops = []
    for a in arrays:
        a = np.asarray(a, float)
        a = a[np.isfinite(a)]
        if a.size:
            q1, q3 = np.quantile(a, [0.25, 0.75])
            tops.append(float(a[a <= q3 + fence * (q3 - q1)].max()))
    return max(pad * max(tops), 1e-6) if tops else 1.0


def violin(per_model: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """One violin per model (incl. Dummy) of the per-structure coordinate MAE.

    The y axis ends at :func:`robust_upper`; values above it are drawn as triangles on the top edge
    with their count and largest value, and each model's mean (of all its values) as a white dot.
    """
    plt = _plt()
    labels = list(per_model)
    data = [np.asarray(per_model[k], float) for k in labels]
    data = [d[np.isfinite(d)] for d in data]
    hi = robust_upper(data)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 1.5), 3.6), dpi=110)
    inside = [d[d <= hi] if (d <= hi).sum() > 1 else np.array([0.0, 0.0]) for d in data]
    ax.violinplot(inside, showmeans=False, showmedians=True, showextrema=False)
    clipped = 0
    for i, d in enumerate(data, start=1):
        mean = float(d.mean()) if d.size else float("nan")
        if mean <= hi:
            ax.plot(i, mean, "o", color="white", mec="black", ms=4, zorder=3)
        out = d[d > hi]
        if out.size:
            clipped += out.size
            ax.plot([i] * out.size, [hi] * out.size, "^", color="tab:red", ms=6, clip_on=False, zorder=3)
            text = f"{out.size} > {hi:.2g}\n(max {out.max():.2g}" + (f",\nmean {mean:.2g})" if mean > hi else ")")
            ax.annotate(text, (i, hi), xytext=(4, -14 if mean <= hi else -22), textcoords="offset points",
                        fontsize=6, color="tab:red")
    ax.set_ylim(0.0, hi)
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("coordinate MAE per structure (Å)")
    note = "white dot: mean; bar: median" + (f"; ▲ {clipped} value(s) above the axis" if clipped else "")
    ax.set_title((title + "\n" if title else "") + note, fontsize=8)
    return _save(plt, fig, path)


def learning_curves(histories: Mapping[str, Mapping[int, Sequence[Sequence[float]]]], batch_size: int,
                    path: str | Path, dummy: float | None = None, title: str = "") -> Path:
    """Validation coordinate MAE of every run against the training structures seen (log axis).

    Args:
        histories: ``{label: {seed: [(optimiser step, validation coord MAE), ...]}}``; one colour per
            label, a solid line for its first seed and dashed lines for the others.
        batch_size: structures per optimiser step (the x axis is ``step * batch_size``).
        dummy: validation coordinate MAE of the unrelaxed input, drawn as a dotted line when given.

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
                    ls="-" if j == 0 else "--", marker="o" if len(arr) < 12 else ".", ms=4 if len(arr) < 12 else 3,
                    lw=1.2, label=label if j == 0 else None)
    if dummy is not None and np.isfinite(dummy):
        ax.axhline(dummy, color="black", lw=1.2, ls=":", label="Dummy (unrelaxed input)")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a log axis under a decade
    ax.set_xlabel("training structures seen")
    ax.set_ylabel("validation coordinate MAE (Å)")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)
