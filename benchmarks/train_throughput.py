"""Training throughput on real batches, side by side: the reference computation against the toolkit.

Each setup trains one model (forward + layer-wise loss + backward + gradient clipping + AdamW) on the
same real structures, in batches of ``--batch-size``, one thread. Setups take turns, round after
round, so both see the same machine load; the figure is structures per CPU-second of this process
(median over rounds), and the ratio of the medians.

- ``reference``: ``paper_faithful`` E3Relax (the authors' computation, reproduced exactly) on a
  database converted with the reference graph (``--graph-opt paper_faithful=true``);
- ``toolkit``: the default E3Relax on the toolkit's graph, with the engine's defaults (denormal
  floats flushed to zero, compiled kernels where they compile).

``--ablations`` adds the steps in between: the reference with denormals flushed, and the toolkit
in eager mode (denormals flushed, no compiled kernels).

Usage (databases from ``e3relax data convert poscar_pairs --src ../shared/data/pnictides ...``)::

    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --data data/pnictides/train.lmdb \\
        --ref-data data/pnictides_ref/train.lmdb [--rounds 5 --steps 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

# a fresh compilation cache, so the first-step figure counts the one-time compilation in full
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="e3relax_inductor_"))

import torch  # noqa: E402

from e3relax.engine.data import collate, prepare_batch  # noqa: E402
from e3relax.registry import LOSSES, MODELS  # noqa: E402

SIZE = {"hidden_channels": 128, "num_layers": 4, "num_rbf": 64}


def batches(path: str, ids: list[str] | None, count: int, batch_size: int) -> tuple[list[Any], list[str]]:
    """``count`` batches of the records with ``ids`` (default: the first records), in that order."""
    from e3relax.datasets.reader import LmdbDataset

    ds = LmdbDataset(path, dtype=torch.float32)
    index = {sid: i for i, sid in enumerate(ds.ids)}
    want = ids if ids is not None else ds.ids[: count * batch_size]
    items = [ds[index[s]] for s in want if s in index]
    if len(items) < count * batch_size:
        sys.exit(f"{path}: only {len(items)} of the {count * batch_size} structures asked for")
    out = [prepare_batch(collate(items[i:i + batch_size]), torch.device("cpu"), torch.float32)
           for i in range(0, count * batch_size, batch_size)]
    return out, [str(d["id"]) for d in items]


class Setup:
    """One model with its optimiser, ready to take timed training steps."""

    def __init__(self, name: str, spec: dict, data: list[Any], compile_kernels: bool, flush_denormal: bool) -> None:
        from e3relax.nn.common import use_compiled_kernels

        use_compiled_kernels(compile_kernels)
        self.flush_denormal = flush_denormal
        torch.manual_seed(0)
        self.name, self.data = name, data
        self.model = MODELS.build(spec).train()
        self.loss = LOSSES.build({"name": "layerwise"})
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, amsgrad=True)
        self.compile_kernels = compile_kernels
        self.edges_per_atom = sum(b.edge_index.shape[1] for b in data) / sum(b.num_nodes for b in data)
        t = time.process_time()
        self.step(data[0])  # warm-up, and the one-time compilation when enabled
        self.first_step_cpu_s = time.process_time() - t

    def step(self, batch: Any) -> None:
        from e3relax.nn.common import use_compiled_kernels

        use_compiled_kernels(self.compile_kernels)
        torch.set_flush_denormal(self.flush_denormal)
        self.opt.zero_grad(set_to_none=True)
        total, _ = self.loss(self.model(batch), batch)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 150.0)
        self.opt.step()

    def timed(self, steps: int) -> float:
        """Structures per CPU-second over ``steps`` steps (cycling through the batches)."""
        n, t = 0, time.process_time()
        for k in range(steps):
            b = self.data[k % len(self.data)]
            self.step(b)
            n += b.num_graphs
        return n / (time.process_time() - t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="training LMDB with the toolkit's graph")
    p.add_argument("--ref-data", required=True, help="the same structures with the reference graph")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=8, help="distinct batches cycled through")
    p.add_argument("--steps", type=int, default=8, help="timed steps per setup and round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ablations", action="store_true",
                   help="also time the reference with denormals flushed and the toolkit in eager mode")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    mine, ids = batches(args.data, None, args.batches, args.batch_size)
    ref, _ = batches(args.ref_data, ids, args.batches, args.batch_size)
    paper, default = {"name": "e3relax", **SIZE, "paper_faithful": True}, {"name": "e3relax", **SIZE}
    setups = [Setup("reference", paper, ref, False, False)]
    if args.ablations:
        setups += [Setup("reference, denormals flushed", paper, ref, False, True),
                   Setup("toolkit, eager", default, mine, False, True)]
    setups.append(Setup("toolkit", default, mine, True, True))
    rates: dict[str, list[float]] = {s.name: [] for s in setups}
    for r in range(args.rounds):
        for s in setups:
            rates[s.name].append(s.timed(args.steps))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n| setup | edges/atom | first step (CPU s) | structures per CPU-second (median of {args.rounds}) "
          "| vs reference |")
    print("|---|---:|---:|---:|---:|")
    for s in setups:
        print(f"| {s.name} | {s.edges_per_atom:.1f} | {s.first_step_cpu_s:.1f} | {med[s.name]:.1f} "
              f"| {med[s.name] / med['reference']:.2f}x |")
    ratio = med["toolkit"] / med["reference"]
    print(f"\ntoolkit / reference: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"rates": rates, "median": med, "ratio": ratio, "args": vars(args),
                       "edges_per_atom": {s.name: s.edges_per_atom for s in setups},
                       "first_step_cpu_s": {s.name: s.first_step_cpu_s for s in setups}}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
