"""Cost of E3Relax on CPU: parameters, throughput, and scaling with cell size.

Prints (and optionally saves as JSON) three tables:
1. parameter counts of the default and paper_faithful modes at hidden 128 and 512;
2. forward (inference) and forward+backward+AdamW (training) structures per second for batches
   of random ~10-atom crystals on a 6 A / 50-neighbour graph plus six self-image edges;
3. forward time and peak resident-memory increase of one structure as a supercell grows from 8 to
   512 atoms (each size measured in a fresh subprocess, eager mode; resident memory sampled every 2 ms).

Times are reported both as wall-clock and as this process's CPU time: with one thread on a shared
machine, CPU time is the better estimate of the uncontended wall time.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/speed.py --threads 1 [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from e3relax import keys
from e3relax.registry import LOSSES, MODELS

log = logging.getLogger("speed")
SELF_IMAGE_OFFSETS = np.array([(0, 0, 1), (0, 1, 0), (1, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)])


def neighbour_graph(pos: np.ndarray, cell: np.ndarray, radius: float = 6.0, max_neigh: int = 50):
    """Brute-force periodic graph: nearest ``max_neigh`` within ``radius`` (no self-images) + 6 self edges."""
    inv = np.linalg.inv(cell)
    reach = np.ceil(radius * np.linalg.norm(inv, axis=0)).astype(int)
    ks = np.array(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")).reshape(3, -1).T
    img = pos[None, :, :] + (ks @ cell)[:, None, :]  # [K, N, 3]
    src, dst, off = [], [], []
    for i in range(len(pos)):
        d = np.linalg.norm(img - pos[i], axis=-1)  # [K, N]
        d[:, i] = np.inf  # drop every self-image (the reference deletes them)
        kk, jj = np.nonzero(d < radius)
        order = np.argsort(d[kk, jj])[:max_neigh]
        src.append(jj[order]); dst.append(np.full(len(order), i)); off.append(ks[kk[order]])
    n = len(pos)
    src.append(np.repeat(np.arange(n), 6)); dst.append(np.repeat(np.arange(n), 6))
    off.append(np.tile(SELF_IMAGE_OFFSETS, (n, 1)))
    etype = np.concatenate([np.zeros(sum(len(s) for s in src[:-1])), np.ones(6 * n)])
    return np.stack([np.concatenate(src), np.concatenate(dst)]), np.concatenate(off), etype


def random_crystal(num_atoms: int, rng: np.random.Generator, vol_per_atom: float = 18.0, min_dist: float = 1.8):
    """A skewed cell of ``vol_per_atom`` per atom with atoms placed by rejection (``min_dist`` apart)."""
    a = (vol_per_atom * num_atoms) ** (1 / 3)
    cell = a * (np.eye(3) + 0.15 * rng.uniform(-1, 1, (3, 3)))
    pos: list[np.ndarray] = []
    while len(pos) < num_atoms:
        p = rng.uniform(0, 1, 3) @ cell
        if all(_min_image(p - q, cell) > min_dist for q in pos):
            pos.append(p)
    return np.array(pos), cell, rng.integers(1, 84, num_atoms)


def _min_image(d: np.ndarray, cell: np.ndarray) -> float:
    f = d @ np.linalg.inv(cell)
    return float(np.linalg.norm((f - np.round(f)) @ cell))


def to_data(pos, cell, z) -> Data:
    ei, off, et = neighbour_graph(pos, cell)
    d = Data()
    d[keys.POS_U] = torch.tensor(pos, dtype=torch.float32)
    d[keys.CELL_U] = torch.tensor(cell, dtype=torch.float32)[None]
    d[keys.POS_R] = d[keys.POS_U] + 0.05
    d[keys.CELL_R] = d[keys.CELL_U] * 1.02
    d[keys.Z] = torch.tensor(z, dtype=torch.long)
    d[keys.EDGE_INDEX] = torch.tensor(ei, dtype=torch.long)
    d[keys.CELL_OFFSETS] = torch.tensor(off, dtype=torch.long)
    d[keys.EDGE_TYPE] = torch.tensor(et, dtype=torch.long)
    d.num_nodes = len(pos)
    return d


def model_spec(hidden: int, paper: bool = False) -> dict:
    return {"name": "e3relax", "hidden_channels": hidden, "num_layers": 4, "num_rbf": 64 if hidden <= 128 else 128,
            "paper_faithful": paper}


def throughput(hidden: int, batch_size: int, repeats: int, rng) -> dict:
    torch.manual_seed(0)
    model = MODELS.build(model_spec(hidden))
    loss_fn = LOSSES.build("layerwise")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, amsgrad=True)
    batches = [Batch.from_data_list([to_data(*random_crystal(int(rng.integers(8, 13)), rng))
                                     for _ in range(batch_size)]) for _ in range(repeats + 1)]
    with torch.no_grad():
        model(batches[0])
        model(batches[1])
        t, c = time.perf_counter(), time.process_time()
        for b in batches[1:]:
            model(b)
        fwd, fwd_cpu = time.perf_counter() - t, time.process_time() - c
    for b in batches[:2]:  # warm-up (and compilation, when enabled)
        loss_fn(model(b), b)[0].backward()
    t, c = time.perf_counter(), time.process_time()
    for b in batches[1:]:
        opt.zero_grad()
        loss, _ = loss_fn(model(b), b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 150.0)
        opt.step()
    train, train_cpu = time.perf_counter() - t, time.process_time() - c
    one = Batch.from_data_list([to_data(*random_crystal(10, rng))])
    with torch.no_grad():
        model(one)
        model(Batch.from_data_list([to_data(*random_crystal(10, rng))]))
        t, c = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            model(one)
        single, single_cpu = (time.perf_counter() - t) / repeats, (time.process_time() - c) / repeats
    n_atoms = sum(b.num_nodes for b in batches[1:]) / repeats
    return {"hidden": hidden, "batch": batch_size, "atoms_per_batch": n_atoms,
            "edges_per_atom": batches[1].edge_index.shape[1] / batches[1].num_nodes,
            "forward_structs_per_s": batch_size * repeats / fwd, "train_structs_per_s": batch_size * repeats / train,
            "forward_structs_per_cpu_s": batch_size * repeats / fwd_cpu,
            "train_structs_per_cpu_s": batch_size * repeats / train_cpu,
            "single_10_atom_s": single, "single_10_atom_cpu_s": single_cpu}


class PeakRSS:
    """Context manager sampling the resident set size (``/proc/self/statm``) in a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self.start = interval, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.start = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def increase_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def reference_throughput(hidden: int, batch_size: int, repeats: int, rng) -> dict | None:
    """The same training step through the plain-tensor transcription of the reference computation
    (tests/test_e3relax_reference.py: per-lattice-vector loops and operation order of the authors'
    code), with the paper_faithful model's parameters. None when the tests folder is absent."""
    import importlib.util
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1] / "tests"
    if not (tests / "test_e3relax_reference.py").exists():
        return None
    sys.path.insert(0, str(tests))
    spec = importlib.util.spec_from_file_location("_e3relax_reference", tests / "test_e3relax_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ms = model_spec(hidden, paper=True)
    ref.F_, ref.T_, ref.K_, ref.CUT = hidden, ms["num_layers"], ms["num_rbf"], 30.0
    torch.manual_seed(0)
    model = MODELS.build(ms)
    loss_fn = LOSSES.build("layerwise")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, amsgrad=True)
    batches = [Batch.from_data_list([to_data(*random_crystal(int(rng.integers(8, 13)), rng))
                                     for _ in range(batch_size)]) for _ in range(repeats + 1)]

    def step(b):
        from e3relax.types import RelaxOutput

        opt.zero_grad()
        pos, cell = ref.reference_forward(ref.weights_of(model, keep_grad=True), b)
        loss, _ = loss_fn(RelaxOutput(pos=pos, cell=cell), b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 150.0)
        opt.step()

    step(batches[0])
    step(batches[1])
    t, c = time.perf_counter(), time.process_time()
    for b in batches[1:]:
        step(b)
    return {"train_structs_per_s": batch_size * repeats / (time.perf_counter() - t),
            "train_structs_per_cpu_s": batch_size * repeats / (time.process_time() - c)}


def scaling_point(hidden: int, reps: tuple[int, int, int]) -> dict:
    """Run in a subprocess: forward time and peak RSS increase for a supercell of an 8-atom cell."""
    rng = np.random.default_rng(0)
    pos, cell, z = random_crystal(8, rng, vol_per_atom=18.0)
    grid = np.array(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij")).reshape(3, -1).T
    big_pos = (pos[None] + (grid @ cell)[:, None]).reshape(-1, 3)
    big_cell = cell * np.array(reps)[:, None]
    data = Batch.from_data_list([to_data(big_pos, big_cell, np.tile(z, len(grid)))])
    torch.manual_seed(0)
    model = MODELS.build(model_spec(hidden))
    with torch.no_grad():
        model(Batch.from_data_list([to_data(pos, cell, z)]))  # warm-up on the 8-atom cell
        with PeakRSS() as mem:
            t, c = time.perf_counter(), time.process_time()
            model(data)
            fwd, cpu = time.perf_counter() - t, time.process_time() - c
    return {"atoms": int(len(big_pos)), "edges": int(data.edge_index.shape[1]), "forward_s": fwd,
            "forward_cpu_s": cpu, "peak_mib": mem.increase_mib}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, sizes up to 128 atoms")
    ap.add_argument("--json", default=None, help="also write the tables here")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the edge kernels (e3relax.nn.common.use_compiled_kernels) first")
    ap.add_argument("--no-scaling", action="store_true", help="skip the supercell table")
    ap.add_argument("--_point", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile:
        from e3relax.nn.common import use_compiled_kernels

        use_compiled_kernels(True)
    if args._point:
        hidden, a, b, c = (int(x) for x in args._point.split(","))
        print(json.dumps(scaling_point(hidden, (a, b, c))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rng = np.random.default_rng(0)
    out: dict = {"threads": args.threads, "compiled": args.compile, "params": [], "throughput": [], "scaling": []}
    print("\n| hidden | mode | parameters |\n|---|---|---|")
    for hidden in (128, 512):
        for paper in (False, True):
            with torch.device("meta"):
                n = MODELS.build(model_spec(hidden, paper)).num_parameters()
            out["params"].append({"hidden": hidden, "paper_faithful": paper, "parameters": n})
            print(f"| {hidden} | {'paper_faithful' if paper else 'default'} | {n / 1e6:.2f} M |")
    repeats = 2 if args.quick else 5
    print("\n| hidden | batch | atoms/batch | edges/atom | forward structs/s (wall / CPU) | "
          "train structs/s (wall / CPU) | one 10-atom forward s (wall / CPU) |")
    print("|---|---|---|---|---|---|---|")
    for hidden in (128, 512):
        r = throughput(hidden, 16, repeats, rng)
        out["throughput"].append(r)
        print(f"| {hidden} | 16 | {r['atoms_per_batch']:.0f} | {r['edges_per_atom']:.1f} | "
              f"{r['forward_structs_per_s']:.1f} / {r['forward_structs_per_cpu_s']:.1f} | "
              f"{r['train_structs_per_s']:.1f} / {r['train_structs_per_cpu_s']:.1f} | "
              f"{r['single_10_atom_s']:.4f} / {r['single_10_atom_cpu_s']:.4f} |")
    ref = reference_throughput(128, 16, repeats, rng)
    if ref is not None:
        out["reference_transcription"] = ref
        print(f"| 128 (reference transcription) | 16 | | | | {ref['train_structs_per_s']:.1f} / "
              f"{ref['train_structs_per_cpu_s']:.1f} | |")
    sizes = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (4, 2, 2)] + ([] if args.quick else [(4, 4, 2), (4, 4, 4)])
    for hidden in () if args.no_scaling else (128, 512):
        print(f"\n| hidden {hidden}: atoms | edges | forward s (wall / CPU) | CPU ms per atom | peak RSS increase (MiB) |")
        print("|---|---|---|---|---|")
        for reps in sizes:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--_point", f"{hidden},{reps[0]},{reps[1]},{reps[2]}"]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
            r["hidden"] = hidden
            out["scaling"].append(r)
            print(f"| {r['atoms']} | {r['edges']} | {r['forward_s']:.3f} / {r['forward_cpu_s']:.3f} | "
                  f"{1e3 * r['forward_cpu_s'] / r['atoms']:.2f} | {r['peak_mib']:.0f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
