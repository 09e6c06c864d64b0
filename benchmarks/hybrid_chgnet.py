#!/usr/bin/env python
"""Does the hybrid pay? CHGNet + FIRE from the input against CHGNet + FIRE from the E3Relax prediction.

For the first ``--num`` structures of a labelled split (a converted test split), in ``--jobs``
processes of one thread each:

- E3Relax (the whole ensemble of ``--checkpoint``, canonical frame and projection on, as
  ``predict``) predicts every input, batched; its CPU time per structure is recorded;
- CHGNet + FIRE (Frechet cell filter, ``--fmax`` eV/A, at most ``--max-steps`` steps) relaxes the
  unrelaxed input, and again the E3Relax prediction (``--refine chgnet``);
- each result is scored against the DFT label with the paper's metrics (coordinates, shape,
  volume), beside the Dummy (the input itself).

Reports the FIRE steps and CPU seconds per structure of both starts, the steps saved, and the
errors of every route. Rows are appended to ``OUT/rows.jsonl`` as they finish, so the same command
continues a stopped run; ``OUT/hybrid.md`` and ``OUT/hybrid.json`` hold the summary::

    OMP_NUM_THREADS=1 python benchmarks/hybrid_chgnet.py --checkpoint srnbh \\
        --data runs/pretrained/data/srnbh/test.lmdb --num 50 --jobs 2 --out results/hybrid_srnbh
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from e3relax.benchmark.chgnet_compare import record_atoms, relax_iter, score

ROUTES = ("Dummy (the input)", "E3Relax", "CHGNet + FIRE from the input", "E3Relax, then CHGNet + FIRE")
METRICS = (("mae_pos", "coordinates (Å)"), ("shape_dev", "shape (Å²)"), ("mae_vol", "volume (Å³)"))


def predict(checkpoint: str, inputs: list) -> tuple[list, float]:
    """The ensemble's predictions and its CPU seconds per structure (model loading excluded)."""
    from e3relax.predict import Relaxer

    relaxer = Relaxer.from_checkpoint(checkpoint)
    t0 = time.process_time()
    out = relaxer.relax(inputs)
    per = (time.process_time() - t0) / max(1, len(inputs))
    return [r["final_structure"] for r in (out if isinstance(out, list) else [out])], per


def summarise(rows: list[dict], refs: dict, inputs: dict, preds: dict, e3relax_cpu_s: float) -> dict:
    """Errors of every route against DFT, FIRE steps and CPU time of both starts."""
    ids = [r["id"] for r in rows]
    ref = [refs[i] for i in ids]
    routes = {ROUTES[0]: [inputs[i] for i in ids], ROUTES[1]: [preds[i] for i in ids],
              ROUTES[2]: [record_atoms(r["input"]["final"]) for r in rows],
              ROUTES[3]: [record_atoms(r["prediction"]["final"]) for r in rows]}
    errors = {name: {k: float(np.mean(v)) for k, v in score(s, ref).items() if k in dict(METRICS)}
              for name, s in routes.items()}
    steps_u = np.array([r["input"]["steps"] for r in rows])
    steps_p = np.array([r["prediction"]["steps"] for r in rows])
    return {"num": len(rows), "errors": errors,
            "steps": {"from_input_mean": float(steps_u.mean()), "from_prediction_mean": float(steps_p.mean()),
                      "from_input_median": float(np.median(steps_u)), "from_prediction_median": float(np.median(steps_p)),
                      "saved_share_of_total": float(1 - steps_p.sum() / steps_u.sum()),
                      "fewer_steps_share": float(np.mean(steps_p < steps_u)),
                      "converged_input": float(np.mean([r["input"]["converged"] for r in rows])),
                      "converged_prediction": float(np.mean([r["prediction"]["converged"] for r in rows]))},
            "cpu_s_per_structure": {"e3relax": e3relax_cpu_s,
                                    "fire_from_input": float(np.mean([r["input"]["cpu_s"] for r in rows])),
                                    "fire_from_prediction": float(np.mean([r["prediction"]["cpu_s"] for r in rows]))}}


def table(s: dict, title: str) -> str:
    st, cpu = s["steps"], s["cpu_s_per_structure"]
    lines = [title, "", "| route | " + " | ".join(lab for _, lab in METRICS) + " | FIRE steps (mean / median) "
             "| CPU s per structure |", "|---|" + "---:|" * (len(METRICS) + 2)]
    extra = {ROUTES[0]: ("", ""), ROUTES[1]: ("0", f"{cpu['e3relax']:.3f}"),
             ROUTES[2]: (f"{st['from_input_mean']:.1f} / {st['from_input_median']:.0f}", f"{cpu['fire_from_input']:.2f}"),
             ROUTES[3]: (f"{st['from_prediction_mean']:.1f} / {st['from_prediction_median']:.0f}",
                         f"{cpu['e3relax'] + cpu['fire_from_prediction']:.2f}")}
    for name, err in s["errors"].items():
        lines.append(f"| {name} | " + " | ".join(f"{err[k]:.4f}" for k, _ in METRICS) + f" | {extra[name][0]} | "
                     f"{extra[name][1]} |")
    lines += ["", f"FIRE steps saved by starting from the prediction: {st['saved_share_of_total']:.0%} of the total; "
              f"fewer steps for {st['fewer_steps_share']:.0%} of the structures; converged within the step cap: "
              f"{st['converged_input']:.0%} from the input, {st['converged_prediction']:.0%} from the prediction."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch
    from predict_speed import load_structures

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="pretrained name, checkpoint or run folder")
    p.add_argument("--data", required=True, help="labelled LMDB split")
    p.add_argument("--num", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2, help="CHGNet processes, one thread each")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--max-steps", type=int, default=500)
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = load_structures(args.data, args.num)
    inputs = {sid: u for sid, u, _ in items}
    refs = {sid: r for sid, _, r in items}
    pred_list, e3_cpu = predict(args.checkpoint, [u for _, u, _ in items])
    preds = {sid: pr for (sid, _, _), pr in zip(items, pred_list)}
    rows_file = out / "rows.jsonl"
    done = {json.loads(line)["id"]: json.loads(line) for line in rows_file.read_text().splitlines()} \
        if rows_file.exists() else {}
    todo = [sid for sid in inputs if sid not in done]
    print(f"{len(items)} structures, {len(done)} done before; CHGNet + FIRE twice for {len(todo)} in {args.jobs} "
          "processes", flush=True)
    starts = [s for sid in todo for s in (inputs[sid], preds[sid])]  # from the input, then from the prediction
    results = relax_iter(starts, args.fmax, args.max_steps, args.jobs)
    with open(rows_file, "a", encoding="utf-8") as fh:
        for k, sid in enumerate(todo, 1):
            row = {"id": sid, "input": next(results), "prediction": next(results)}
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done[sid] = row
            print(f"{k}/{len(todo)} {sid}: {row['input']['steps']} steps from the input, "
                  f"{row['prediction']['steps']} from the prediction", flush=True)
    rows = [done[sid] for sid in inputs if sid in done]
    s = summarise(rows, refs, inputs, preds, e3_cpu)
    title = (f"`{args.checkpoint}` on `{args.data}`: {s['num']} structures; CHGNet + FIRE with the Frechet cell "
             f"filter, fmax {args.fmax} eV/Å, at most {args.max_steps} steps; errors against DFT, means over structures.")
    (out / "hybrid.json").write_text(json.dumps(s, indent=2))
    (out / "hybrid.md").write_text(table(s, title), encoding="utf-8")
    print(table(s, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
