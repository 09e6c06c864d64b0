"""Pretrained checkpoints shipped in ``e3relax/pretrained``: the index, name resolution, slim export.

``pretrained/index.json`` maps a name to its ensemble members and model card::

    {"pnictides": {"members": ["pnictides_s0.pt", "pnictides_s1.pt"], "card": "pnictides.md",
                   "description": "...", "metrics": {...}}}

A shipped member is a *slim* checkpoint: the format version, the run config (with the graph
settings of its training data under ``config["graph"]``), the EMA weights, and prediction
statistics under ``"predict"`` (training volume-ratio range, uncertainty threshold). It loads with
:func:`e3relax.engine.checkpoint.load_checkpoint` like any run checkpoint.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["PRETRAINED_DIR", "pretrained_index", "resolve_checkpoints", "graph_spec", "export_slim",
           "training_statistics"]

log = logging.getLogger(__name__)

#: folder of the shipped checkpoints (inside the installed package)
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
#: the graph builder used when a checkpoint does not say which built its training data
DEFAULT_GRAPH = {"name": "periodic_multi_edge"}
#: run-config keys a slim checkpoint keeps
_KEEP = ("seed", "dtype", "model", "loss", "optim", "schedule", "ema")


def pretrained_index(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The shipped checkpoints' index (empty if none ship)."""
    path = Path(folder or PRETRAINED_DIR) / "index.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def resolve_checkpoints(spec: str | Path | Sequence[str | Path], folder: str | Path | None = None) -> list[Path]:
    """Checkpoint files for a path, a run folder, a pretrained name, or a list of these.

    A pretrained name gives all its ensemble members (first = the primary member).

    Raises:
        FileNotFoundError: naming the spec and the pretrained names available.
    """
    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in resolve_checkpoints(s, folder)]
    path = Path(spec)
    if path.is_dir() and (path / "checkpoints" / "best.pt").exists():
        return [path / "checkpoints" / "best.pt"]
    if path.is_file():
        return [path]
    index = pretrained_index(folder)
    entry = index.get(str(spec))
    if entry is None:
        names = ", ".join(sorted(index)) or "none"
        raise FileNotFoundError(f"checkpoint '{spec}': no such file or run folder, and not a pretrained name "
                                f"(shipped: {names})")
    base = Path(folder or PRETRAINED_DIR)
    files = [base / m for m in entry["members"]]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"pretrained '{spec}': member file(s) missing from the installation: {missing}")
    return files


def graph_spec(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Graph-builder settings a checkpoint's training data used.

    Looks at ``config["graph"]`` (slim checkpoints), then at the metadata of the run's training
    LMDB if it is still on disk, else falls back to the default builder with a warning.
    """
    config = ckpt.get("config", {})
    if isinstance(config.get("graph"), Mapping):
        return dict(config["graph"])
    train = (config.get("data") or {}).get("train")
    if isinstance(train, str) and Path(train).exists():
        try:
            from e3relax.datasets.reader import LmdbDataset

            graph = LmdbDataset(train).metadata.get("graph")
            if graph:
                return dict(graph)
        except Exception as exc:  # noqa: BLE001 - fall back to the default, but say why
            log.warning("could not read the graph settings of %s: %s", train, exc)
    log.warning("checkpoint does not record its graph settings; using %s", DEFAULT_GRAPH)
    return dict(DEFAULT_GRAPH)


def training_statistics(lmdb_path: str | Path, quantiles: tuple[float, float] = (0.001, 0.999)) -> dict[str, Any]:
    """Volume-ratio range of a labelled LMDB split and the frame its pairs are in:
    ``{"volume_ratio": [lo, hi], "num": n, "frame": "canonical" | "dataset"}`` (``canonical``: converted
    with ``--canonical-frame``, so predictions default to the canonical frame)."""
    from e3relax import keys
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.engine.data import training_frame

    ds = LmdbDataset(lmdb_path)
    ratios = []
    for i in range(len(ds)):
        d = ds[i]
        ratios.append(float(torch.linalg.det(d[keys.CELL_R][0].double()) / torch.linalg.det(d[keys.CELL_U][0].double())))
    r = np.asarray(ratios)
    frame = training_frame(ds)
    return {"volume_ratio": [float(np.quantile(r, quantiles[0])), float(np.quantile(r, quantiles[1]))],
            "volume_ratio_quantiles": list(quantiles), "num": int(len(r)), "frame": frame}


def export_slim(src: str | Path, dst: str | Path, *, graph: Mapping[str, Any] | None = None,
                predict: Mapping[str, Any] | None = None, weights: str = "ema",
                training: Mapping[str, Any] | None = None) -> Path:
    """Write a slim copy of a run checkpoint: config (+ graph), chosen weights, prediction statistics.

    Args:
        src: run checkpoint (best.pt / last.pt) or run folder.
        dst: output file.
        graph: graph settings to record (default: :func:`graph_spec` of the source).
        predict: prediction statistics (``volume_ratio`` range, ``uncertainty`` threshold, ...).
        weights: ``ema`` or ``model``.
        training: how the weights were trained (plain numbers and strings, e.g. ``time_used_s``
            summed over every run they continued from), kept as ``training`` so a later run that
            starts from this file can add its own time to it.
    """
    from e3relax.engine.checkpoint import load_checkpoint, model_weights

    ckpt = load_checkpoint(src)
    # keep what rebuilds and describes the model; drop machine paths (run_dir, data, hooks)
    config = {k: ckpt["config"][k] for k in _KEEP if k in ckpt["config"]}
    config["graph"] = dict(graph) if graph is not None else graph_spec(ckpt)
    slim = {"format_version": ckpt["format_version"], "config": config,
            "ema_model": {k: v.detach().clone().float() if v.is_floating_point() else v.clone()
                          for k, v in model_weights(ckpt, weights).items()},
            "predict": dict(predict or {})}
    if ckpt.get("train_elements") is not None:
        slim["train_elements"] = {int(z): list(v) for z, v in ckpt["train_elements"].items()}
    if ckpt.get("train_frame") is not None:
        slim["train_frame"] = str(ckpt["train_frame"])
    if training:
        slim["training"] = dict(training)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)
    return dst
