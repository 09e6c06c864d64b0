"""The comparison driver: data -> every model x seed (train, test) -> Dummy -> CHGNet -> outputs.

:class:`Comparison` is what ``benchmarks/compare_baselines.py`` runs. Results are written after
every (model, seed), and each (model, seed) is a job (:mod:`e3relax.benchmark.jobs`) that resumes
its run from the last checkpoint: the same command on the same output folder continues a stopped
comparison, and finished runs are not repeated. ``jobs > 1`` runs that many at once, one process each.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e3relax.benchmark import figures, tables
from e3relax.benchmark.budget import Budget
from e3relax.benchmark.data import prepare_data
from e3relax.benchmark.jobs import job_spec, record_path, run_jobs
from e3relax.benchmark.saved import learning_curves, same_comparison
from e3relax.benchmark.progress import Progress, estimate_chgnet_s, estimate_run_s, minutes
from e3relax.benchmark.predict import Predictions, dummy_predictions, predict, prior_predictions, subset
from e3relax.benchmark.runner import match_summary
from e3relax.benchmark.suite import REFERENCE_MODEL, ModelRun, ablation_runs, model_runs
from e3relax.engine.data import training_frame
from e3relax.errors import InputError
from e3relax.metrics import MAE_POS
from e3relax.predict.prepare import FrameSettings

__all__ = ["Comparison", "software_versions"]

log = logging.getLogger(__name__)


def software_versions() -> dict[str, str]:
    """Versions of Python and the packages the numbers depend on."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "torch_threads": str(torch.get_num_threads())}
    for pkg in ("e3relax", "torch", "torch_geometric", "e3nn", "pytorch-ignite", "pymatgen", "ase", "spglib",
                "chgnet", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def write_per_structure(preds: Predictions, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = sorted(preds.metrics)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "natoms", *names])
        for i, sid in enumerate(preds.ids):
            w.writerow([sid, preds.natoms[i], *(f"{preds.metrics[n][i]:.6g}" for n in names)])


def _read_column(path: Path, column: str = MAE_POS) -> np.ndarray:
    with path.open(encoding="utf-8") as fh:
        return np.array([float(row[column]) for row in csv.DictReader(fh)])


@dataclass
class Comparison:
    """One comparison run.

    Attributes:
        runs: the models (and ablations) to train.
        seeds: training seeds (every model gets every seed).
        budget: shared training budget.
        out: output folder.
        data: ``(dataset, layout, cache, split_ratio, data_seed, limit)`` for :func:`prepare_data`.
        device: torch device string.
        match_max, timing_structures, chgnet, chgnet_max_steps, fmax: evaluation settings.
        resume: keep the (model, seed) records already in ``out`` (default; False: start afresh).
        jobs: (model, seed) runs at a time, each in its own one-thread process (1: in this process).
        frames: space-group projection (default on) and frame of the test predictions (default
            ``canonical=None``: the frame of the training pairs, canonical only for data converted
            with ``--canonical-frame``).
    """

    runs: list[ModelRun]
    seeds: list[int]
    budget: Budget
    out: Path
    data: tuple
    device: str = "cpu"
    match_max: int | None = None
    timing_structures: int = 32
    chgnet: int = 6
    chgnet_max_steps: int = 500
    fmax: float = 0.05
    resume: bool = True
    progress_bar: bool = False
    budget_text: str = ""
    frames: FrameSettings = field(default_factory=FrameSettings)
    jobs: int = 1
    _results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, args: Any) -> "Comparison":
        names = None if args.models in (None, "all") else [m.strip() for m in args.models.split(",") if m.strip()]
        runs = model_runs(names, args.config_dir, args.size)
        if args.ablations:
            runs += ablation_runs(args.config_dir, args.size)
        budget = Budget(steps=args.steps, eval_every=args.eval_every, wall_s=args.wall_time,
                        batch_size=args.batch_size, max_val_structures=args.max_val,
                        cpu_s=getattr(args, "cpu_time", None), patience=getattr(args, "patience", None),
                        lr_schedule=getattr(args, "lr_schedule", None))
        text = budget.describe() + " on {num_val} structures"
        return cls(runs, list(args.seeds), budget, Path(args.out),
                   (args.data, args.layout, args.data_cache, args.split_ratio, args.data_seed, args.limit),
                   args.device, args.match_max, args.timing_structures, args.chgnet, args.chgnet_max_steps,
                   args.fmax, not getattr(args, "fresh", False), args.progress_bar, text,
                   FrameSettings(not getattr(args, "no_symmetry", False), getattr(args, "canonical_cell", None),
                                 getattr(args, "symprec", 0.01)), max(1, int(getattr(args, "jobs", 1))))

    # ------------------------------------------------------------------ state
    @property
    def results_path(self) -> Path:
        return self.out / "results.json"

    def _load_previous(self) -> dict[str, Any]:
        if not self.resume:
            for sub in ("records", "runs", "jobs"):
                shutil.rmtree(self.out / sub, ignore_errors=True)
            return {}
        if self.results_path.exists():
            return json.loads(self.results_path.read_text(encoding="utf-8"))
        return {}

    def _check_same_comparison(self, prev: dict[str, Any]) -> None:
        """Refuse to continue a comparison of other data or another budget in the same folder."""
        old = prev.get("meta") or {}
        if not old:
            return
        new = self._results["meta"]
        for key, what in (("budget", "budget"), ("dataset", "data"), ("split_sizes", "data split")):
            if old.get(key) is not None and same_comparison(old.get(key)) != same_comparison(new.get(key)):
                raise InputError(f"{self.results_path}: this folder holds a comparison with another {what} "
                                 f"({old.get(key)}); use another --out, or --fresh to discard it")

    def _previous_record(self, prev: dict[str, Any], key: str, seed: int) -> dict[str, Any] | None:
        """A finished (model, seed): in the previous results.json or as a job's record file."""
        old = prev.get("models", {}).get(key, {}).get("seeds", {}).get(str(seed))
        path = record_path(self.out, key, seed)
        if old is None and self.resume and path.exists():
            old = json.loads(path.read_text(encoding="utf-8"))
        return old

    def _keep_earlier(self, prev: dict[str, Any]) -> None:
        """Keep the folder's records beyond this ``--models``/``--seeds`` (and CHGNet, if this runs none)."""
        for key, entry in prev.get("models", {}).items():
            mine = self._results["models"].get(key)
            if mine is None:
                if entry.get("seeds"):
                    self._results["models"][key] = entry
                    log.info("%s: kept from an earlier run in this folder", entry["label"])
                continue
            for seed, rec in entry.get("seeds", {}).items():
                mine["seeds"].setdefault(seed, rec)
        seeds = {int(s) for e in self._results["models"].values() for s in e["seeds"]} | set(self.seeds)
        self._results["meta"]["seeds"] = sorted(seeds)
        if self.chgnet <= 0 and prev.get("chgnet"):
            self._results["chgnet"], self._results["energy"] = prev["chgnet"], prev.get("energy")

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.results_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._results, indent=1, allow_nan=True), encoding="utf-8")
        tmp.replace(self.results_path)
        (self.out / "results.md").write_text(tables.render(self._results), encoding="utf-8")
        tables.write_csv(self._results, self.out / "results.csv")
        self._write_per_seed_csv()

    def _write_per_seed_csv(self) -> None:
        keys = [k for k, _ in tables.COLUMNS]
        with (self.out / "results_per_seed.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["model", "key", "seed", *keys, "parameters", "train_seconds", "steps", "converged",
                        "wall_budget_hit", "batch1_ms", "batched_ms"])
            for key, entry in self._results["models"].items():
                for seed, rec in entry["seeds"].items():
                    vals = [rec["metrics"].get(k, rec["match"].get(k, math.nan)) for k in keys]
                    w.writerow([entry["label"], key, seed, *(f"{v:.6g}" for v in vals), rec["parameters"],
                                f"{rec['train_seconds']:.1f}", rec["steps"], rec["converged"],
                                rec["wall_budget_hit"], f"{rec['timing']['batch1_ms']:.3f}",
                                f"{rec['timing']['batched_ms']:.3f}"])

    # ------------------------------------------------------------------ phases
    def run(self) -> dict[str, Any]:
        """Run every phase; returns the results document (also in ``out/results.json``)."""
        from e3relax.datasets.reader import LmdbDataset

        t_start = time.perf_counter()
        splits, data_desc = prepare_data(*self.data[:3], split_ratio=self.data[3], seed=self.data[4],
                                         limit=self.data[5])
        test_ds = LmdbDataset(splits["test"])
        if self.frames.canonical is None:  # predict in the frame the models train in
            canonical = training_frame(LmdbDataset(splits["train"])) == "canonical"
            self.frames = dataclasses.replace(self.frames, canonical=canonical)
        prev = self._load_previous()
        num_val = len(LmdbDataset(splits["val"]))
        if self.budget.max_val_structures:
            num_val = min(num_val, int(self.budget.max_val_structures))
        self.budget_text = self.budget_text.replace("{num_val}", str(num_val))
        self._results = {"meta": self._meta(data_desc, splits, len(test_ds)), "models": {}, "dummy": {},
                         "prior": {}, "chgnet": None, "energy": None}
        self._check_same_comparison(prev)
        val_dummy = dummy_predictions(subset(LmdbDataset(splits["val"]), num_val)).metrics[MAE_POS]
        self._results["meta"]["val_dummy_mae_pos"] = float(np.nanmean(val_dummy))  # the learning curves' reference
        total = len(self.runs) * len(self.seeds)
        progress = Progress(total, estimate_run_s(self.budget.wall_s or self.budget.cpu_s, len(test_ds)),
                            estimate_chgnet_s(self.chgnet, self.jobs), t_start, self.jobs)
        self._dummy(test_ds)
        self._prior(test_ds, LmdbDataset(splits["train"]))
        specs = []
        for run in self.runs:
            entry = self._results["models"].setdefault(
                run.key, {"label": run.label, "ablation": run.ablation, "config_file": run.config_file, "seeds": {}})
            for seed in self.seeds:
                old = self._previous_record(prev, run.key, seed)
                if old is not None:
                    log.info("%s seed %d: finished earlier, kept", run.label, seed)
                    entry["seeds"][str(seed)] = old
                    progress.skip(old)
                    continue
                specs.append(job_spec(run, seed, splits, self.budget, self.out, self.device, self.match_max,
                                      self.timing_structures, self.frames, self.progress_bar))
        self._keep_earlier(prev)
        log.info("plan: %s", progress.plan(self.runs, self.seeds, len(test_ds), self.chgnet, self.budget_text))
        if specs and self.jobs > 1:
            log.info("running %d (model, seed) jobs, %d at a time in their own processes (OMP_NUM_THREADS=1)",
                     len(specs), self.jobs)

        def done(spec: dict, record: dict | None) -> None:
            entry, seed = self._results["models"][spec["run"]["key"]], str(spec["seed"])
            if record is None:
                entry.setdefault("failed", {})[seed] = "the job failed; its log (OUT/jobs/ or above) says why"
            else:
                entry["seeds"][seed] = record
                entry.get("failed", {}).pop(seed, None)
                m, d = record["metrics"], self._results["dummy"]
                log.info("%s seed %s: %d steps, test coord MAE %.4f Å, shape %.4f Å², volume %.3f Å³ "
                         "(Dummy %.4f / %.4f / %.3f)", entry["label"], seed, record["steps"], m[MAE_POS],
                         m["shape_dev"], m["mae_vol"], d[MAE_POS], d["shape_dev"], d["mae_vol"])
            self._save()
            log.info("progress: %s", progress.step(record))

        run_jobs(specs, self.jobs, done)
        self._figures()
        if self.chgnet > 0:
            log.info("progress: %s", progress.before_chgnet())
            self._chgnet_phase(test_ds)
        self._results["meta"]["total_seconds"] = time.perf_counter() - t_start
        log.info("finished in %s", minutes(self._results["meta"]["total_seconds"]))
        self._save()
        log.info("wrote %s (results.md, results.csv, results.json, figures/, runs/)", self.out)
        return self._results

    def _meta(self, data_desc: dict, splits: dict, n_test: int) -> dict[str, Any]:
        from e3relax.datasets.reader import LmdbDataset

        sizes = {k: len(LmdbDataset(v)) for k, v in splits.items()}
        return {"dataset": data_desc, "split_sizes": sizes, "test_structures": n_test, "seeds": self.seeds,
                "budget": self.budget.as_dict(), "budget_text": self.budget_text, "device": self.device,
                "match_structures": min(n_test, self.match_max or n_test), "software": software_versions(),
                "symmetry": self.frames.symmetry, "canonical_cell": self.frames.canonical,
                "symprec": self.frames.symprec,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def _dummy(self, test_ds: Any) -> None:
        preds = dummy_predictions(test_ds)
        match, _ = match_summary(preds, self.match_max)
        self._results["dummy"] = {**{k: float(np.nanmean(v)) for k, v in preds.metrics.items()}, **match}
        write_per_structure(preds, self.out / "per_structure" / "dummy.csv")

    def _prior(self, test_ds: Any, train_ds: Any) -> None:
        preds = prior_predictions(test_ds, train_ds)
        match, _ = match_summary(preds, self.match_max)
        self._results["prior"] = {**{k: float(np.nanmean(v)) for k, v in preds.metrics.items()}, **match}
        write_per_structure(preds, self.out / "per_structure" / "prior.csv")
        log.info("atomic-volume prior (fitted on the training split): test coord MAE %.4f Å, shape %.4f Å², "
                 "volume %.3f Å³", self._results["prior"][MAE_POS], self._results["prior"]["shape_dev"],
                 self._results["prior"]["mae_vol"])

    def _figures(self) -> None:
        fig_dir = self.out / "figures"
        per = self.out / "per_structure"
        dummy = _read_column(per / "dummy.csv")
        violins = {"Dummy": dummy}
        for key, entry in self._results["models"].items():
            seed = next(iter(entry["seeds"]), None)
            if seed is None:
                continue
            path = per / f"{key}_s{seed}.csv"
            if not path.exists():  # a run kept from a copied results.json: its per-structure errors stayed behind
                log.warning("%s: no per-structure errors of %s seed %s; its distribution figures are skipped",
                            path, entry["label"], seed)
                continue
            vals = _read_column(path)
            figures.error_distribution(vals, dummy, entry["label"], fig_dir / f"error_distribution_{key}.png")
            if not entry["ablation"]:
                violins[entry["label"].split(" (")[0]] = vals
        name = self._results["meta"]["dataset"]["name"]
        figures.violin(violins, fig_dir / "violin_coord_mae.png",
                       f"{name}: per-structure coordinate MAE (seed {self.seeds[0]})")
        learning_curves(self._results, fig_dir)

    # ------------------------------------------------------------------ CHGNet
    def _reference_model(self) -> tuple[torch.nn.Module | None, str | None]:
        """E3Relax's best seed by validation among those whose checkpoint is here, and its seed."""
        from e3relax.engine.checkpoint import model_from_checkpoint

        seeds = self._results["models"].get(REFERENCE_MODEL, {}).get("seeds", {})
        found = []
        for seed, rec in seeds.items():
            ckpts = [Path(rec["run_dir"]) / "checkpoints" / name for name in ("best.pt", "last.pt")]
            ckpt = next((c for c in ckpts if c.exists()), None)
            if ckpt is None:
                log.info("E3Relax seed %s: no checkpoint in %s (a run kept from a copied results.json); "
                         "not a candidate for the CHGNet comparison", seed, rec["run_dir"])
            else:
                found.append((rec.get("best_val", math.inf), seed, ckpt))
        if not found:
            return None, None
        val, seed, ckpt = min(found, key=lambda t: (t[0], t[1]))
        log.info("CHGNet comparison: E3Relax seed %s, the best validation coordinate MAE here (%.4f Å)", seed, val)
        return model_from_checkpoint(ckpt, weights="ema", device="cpu")[0], seed

    def _chgnet_phase(self, test_ds: Any) -> None:
        from e3relax.benchmark.chgnet_compare import energy_check, energy_summary, relax_and_score, score

        try:
            import chgnet  # noqa: F401 (is it installed?)
        except ImportError:
            log.warning("CHGNet is not installed (pip install 'e3relax[chgnet]'); skipping the CHGNet comparison")
            return
        sub = subset(test_ds, self.chgnet)
        ref_model, ref_seed = self._reference_model()
        dummy = dummy_predictions(sub)
        jobs = max(1, self.jobs)
        log.info("CHGNet + FIRE on the first %d test structures (fmax %.3g eV/Å), %d process(es)", len(dummy.ids),
                 self.fmax, jobs)
        fire = relax_and_score(dummy.inputs, dummy.references, self.fmax, self.chgnet_max_steps, jobs)
        n = len(dummy.ids)
        rows = [("Dummy (unrelaxed input)", {k: float(np.mean(v)) for k, v in dummy.metrics.items()}, None)]
        chg_ms = 1e3 * float(np.mean(fire["cpu_s"]))  # CPU time of its one-thread worker, fair under load
        e3_ms = math.nan
        if ref_model is not None:
            e3 = predict(ref_model, sub, torch.device("cpu"), torch.float32, self.budget.batch_size, self.frames)
            e3_ms = self._results["models"][REFERENCE_MODEL]["seeds"][ref_seed]["timing"]["batch1_ms"]
            rows.append((f"E3Relax (seed {ref_seed})", {k: float(np.mean(v)) for k, v in e3.metrics.items()}, e3_ms))
        rows.append(("CHGNet + FIRE", {k: float(np.mean(v)) for k, v in fire["metrics"].items()}, chg_ms))
        if ref_model is not None:
            energy = energy_check(dummy.inputs, dummy.references, e3.structures, fire["steps"], fire["converged"],
                                  self.fmax, self.chgnet_max_steps, jobs)
            hybrid = score(energy["structures_from_predicted"], dummy.references)
            hybrid_ms = e3_ms + 1e3 * float(np.mean(energy["cpu_s_from_predicted"]))
            rows.append(("E3Relax → CHGNet + FIRE", {k: float(np.mean(v)) for k, v in hybrid.items()}, hybrid_ms))
            self._results["energy"] = energy_summary(energy, n)
        import chgnet as chgnet_pkg

        match, _ = match_summary(Predictions(structures=fire["structures"], references=dummy.references), None)

        self._results["chgnet"] = {
            "num_structures": n, "fmax": self.fmax, "max_steps": self.chgnet_max_steps,
            "chgnet_version": getattr(chgnet_pkg, "__version__", "?"),
            "converged": int(np.sum(fire["converged"])), "metrics": rows[-2 if ref_model is not None else -1][1],
            "seconds_per_structure": float(np.mean(fire["seconds"])), "steps_mean": float(np.mean(fire["steps"])),
            "cpu_seconds_per_structure": float(np.mean(fire["cpu_s"])), "processes": jobs, "e3relax_seed": ref_seed,
            "time_ratio": chg_ms / e3_ms if e3_ms and not math.isnan(e3_ms) else math.nan, "rows": rows,
            "match": match,
            "ids": dummy.ids}

    def markdown(self, results: dict[str, Any] | None = None) -> str:
        return tables.render(results or self._results)
