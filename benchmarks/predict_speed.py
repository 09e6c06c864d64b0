"""Prediction speed and hybrid refinement on held-out real structures (CPU).

Measures, for the structures of a labelled LMDB split (e.g. a converted test split):

1. batched E3Relax prediction throughput (structures/s, graph building included) with one
   member and with the whole ensemble of a checkpoint name;
2. CHGNet + FIRE (Frechet cell filter, fmax 0.05) on the same structures from the unrelaxed
   input: structures/s and steps, hence the speed ratio;
3. CHGNet + FIRE started from the E3Relax prediction (``--refine chgnet``): steps and time;
4. scaling with atoms: prediction time per structure for supercells of one structure;
5. the cost of the canonical frame and the space-group projection: process CPU time of the same
   predictions with both on (the default) and both off, interleaved, and their ratio.

Usage (after ``benchmarks/train_pretrained.py`` converted the data)::

    OMP_NUM_THREADS=1 python benchmarks/predict_speed.py --checkpoint srnbh \\
        --data runs/pretrained/data/srnbh/test.lmdb --num 100 --num-chgnet 8 --out results/predict_speed_srnbh.json

Only item 5, on 100 structures of a converted pnictides test split::

    OMP_NUM_THREADS=1 python benchmarks/predict_speed.py --checkpoint pnictides --only-frame-cost \
        --data runs/pretrained/data/pnictides/test.lmdb --num 100 --out results/frame_cost_pnictides.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def load_structures(path: str, num: int) -> list[tuple[str, object, object]]:
    """``(id, unrelaxed Atoms, relaxed Atoms)`` of the first ``num`` records of a labelled LMDB."""
    from e3relax import keys
    from e3relax.datasets.reader import LmdbDataset
    from e3relax.structures import arrays_to_atoms

    ds = LmdbDataset(path)
    out = []
    for i in range(min(num, len(ds))):
        d = ds[i]
        z, pbc = d[keys.Z].numpy(), d[keys.PBC].reshape(3).numpy()
        u = arrays_to_atoms(d[keys.POS_U].double().numpy(), d[keys.CELL_U][0].double().numpy(), z, pbc)
        r = arrays_to_atoms(d[keys.POS_R].double().numpy(), d[keys.CELL_R][0].double().numpy(), z, pbc)
        out.append((str(d[keys.ID]), u, r))
    return out


def time_prediction(relaxer, atoms: list, batch_size: int, repeats: int = 2) -> float:
    """Best-of-``repeats`` wall time (s) to relax all ``atoms`` in batches."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        relaxer.relax(list(atoms), batch_size=batch_size)
        best = min(best, time.perf_counter() - t0)
    return best


def frame_cost(checkpoint, atoms: list, batch_size: int, repeats: int = 3) -> dict:
    """Process CPU seconds per structure of one member's predictions with framing and projection on
    and off (best of ``repeats``, interleaved), and the relative cost of having them on."""
    from e3relax.predict import Relaxer

    relaxers = {"on": Relaxer.from_checkpoint(checkpoint, ensemble=False),
                "off": Relaxer.from_checkpoint(checkpoint, ensemble=False, symmetry=False, canonical=False)}
    best = {k: float("inf") for k in relaxers}
    for _ in range(repeats):
        for k, r in relaxers.items():
            t0 = time.process_time()
            r.relax(list(atoms), batch_size=batch_size)
            best[k] = min(best[k], time.process_time() - t0)
    n = len(atoms)
    out = {"cpu_s_per_structure_on": best["on"] / n, "cpu_s_per_structure_off": best["off"] / n,
           "frame_cost_fraction": best["on"] / best["off"] - 1.0, "structures": n, "repeats": repeats}
    print(json.dumps(out), flush=True)
    return out


def chgnet_runs(items: list, relaxer, fmax: float, max_steps: int) -> list[dict]:
    """CHGNet + FIRE from the unrelaxed structure and from the E3Relax prediction."""
    from e3relax.chgnet_tools import chgnet_relax, load_chgnet

    model = load_chgnet()
    rows = []
    for sid, u, _ in items:
        t0 = time.perf_counter()
        pred = relaxer.relax(u)["final_structure"]
        t_pred = time.perf_counter() - t0
        a = chgnet_relax(u, fmax=fmax, max_steps=max_steps, model=model)
        b = chgnet_relax(pred, fmax=fmax, max_steps=max_steps, model=model)
        rows.append({"id": sid, "natoms": len(u), "steps_from_unrelaxed": a.steps, "converged_unrelaxed": a.converged,
                     "seconds_from_unrelaxed": a.seconds, "steps_from_prediction": b.steps,
                     "converged_prediction": b.converged, "seconds_from_prediction": b.seconds + t_pred,
                     "energy_unrelaxed_path": a.energy_per_atom, "energy_prediction_path": b.energy_per_atom})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def scaling(relaxer, atoms, reps: list[tuple[int, int, int]], repeats: int = 3) -> list[dict]:
    """Seconds per structure for supercells of ``atoms`` (batch of one)."""
    out = []
    for rep in reps:
        big = atoms * rep
        t = time_prediction(relaxer, [big], batch_size=1, repeats=repeats)
        out.append({"natoms": len(big), "seconds": t})
        print(json.dumps(out[-1]), flush=True)
    return out


def chgnet_summary(res: dict, rows: list[dict]) -> dict:
    """Throughput of CHGNet + FIRE, the speed ratio and the refinement step counts."""
    sec_u = float(np.sum([r["seconds_from_unrelaxed"] for r in rows]))
    out = {"chgnet_fire_structures_per_s": len(rows) / sec_u,
           "median_steps_from_unrelaxed": float(np.median([r["steps_from_unrelaxed"] for r in rows])),
           "median_steps_from_prediction": float(np.median([r["steps_from_prediction"] for r in rows])),
           "mean_steps_from_unrelaxed": float(np.mean([r["steps_from_unrelaxed"] for r in rows])),
           "mean_steps_from_prediction": float(np.mean([r["steps_from_prediction"] for r in rows])),
           "seconds_from_unrelaxed": sec_u,
           "seconds_from_prediction": float(np.sum([r["seconds_from_prediction"] for r in rows]))}
    out["speed_ratio_e3relax_vs_chgnet"] = res["e3relax_structures_per_s"] / out["chgnet_fire_structures_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from e3relax.predict import Relaxer

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, action="append",
                   help="pretrained name, checkpoint or run folder; repeat for an ensemble")
    p.add_argument("--data", required=True, help="labelled LMDB split")
    p.add_argument("--num", type=int, default=100, help="structures for the throughput measurement")
    p.add_argument("--num-chgnet", type=int, default=8, help="structures relaxed with CHGNet + FIRE")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--only-frame-cost", action="store_true", help="measure only item 5 (framing and projection)")
    p.add_argument("--out", required=True, help="JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    items = load_structures(args.data, args.num)
    unrelaxed = [u for _, u, _ in items]
    if args.only_frame_cost:
        res = {"num": len(items), "mean_atoms": float(np.mean([len(a) for a in unrelaxed])),
               "frames": frame_cost(args.checkpoint, unrelaxed, args.batch_size)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        return 0
    single = Relaxer.from_checkpoint(args.checkpoint, ensemble=False)
    ens = Relaxer.from_checkpoint(args.checkpoint)
    single.relax(unrelaxed[:2])  # warm-up
    res: dict = {"num": len(items), "mean_atoms": float(np.mean([len(a) for a in unrelaxed])),
                 "torch_threads": torch.get_num_threads()}
    t1 = time_prediction(single, unrelaxed, args.batch_size)
    tn = time_prediction(ens, unrelaxed, args.batch_size)
    res["e3relax_structures_per_s"] = len(items) / t1
    res["ensemble_structures_per_s"] = len(items) / tn
    res["ensemble_members"] = len(ens.models)
    print(json.dumps(res), flush=True)
    rows = chgnet_runs(items[: args.num_chgnet], single, args.fmax, args.max_steps) if args.num_chgnet else []
    res["chgnet"] = rows
    if rows:
        res.update(chgnet_summary(res, rows))
    res["frames"] = frame_cost(args.checkpoint, unrelaxed, args.batch_size)
    res["scaling"] = scaling(single, unrelaxed[0], [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 3, 2)])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k not in ("chgnet", "scaling")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
