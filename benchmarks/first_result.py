#!/usr/bin/env python
"""CPU time to the first prediction: ``e3relax predict`` on one 2-atom cell, measured with /usr/bin/time.

Each command runs in a fresh process, ``--repeats`` times, interleaved; the table gives the
process CPU time (user + sys, all threads) and wall time, minimum and median. The import floors
(``import torch``; torch + torch_geometric + ase.io, which the prediction path needs) show how
much of the total is beyond this toolkit's reach::

    python benchmarks/first_result.py --repeats 3 --out results/first_result.json

The input is the built-in test structure gen0_00263 (GaN, 2 atoms), written as a CIF.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import torch, torch_geometric, ase.io": [sys.executable, "-c", "import torch, torch_geometric, ase.io"],
    "Relaxer.from_checkpoint('pnictides')": [
        sys.executable, "-c", "from e3relax.predict import Relaxer; Relaxer.from_checkpoint('pnictides')"],
    "e3relax predict one.cif --checkpoint pnictides": [
        sys.executable, "-m", "e3relax.cli.main", "predict", "one.cif", "--checkpoint", "pnictides",
        "--out", "out", "--no-progress"],
}


def write_input(folder: Path) -> Path:
    from ase.io import write

    from e3relax.datasets import builtin

    pair = next(p for p in builtin.load() if p.id == "gen0_00263")
    path = folder / "one.cif"
    write(path, pair.unrelaxed)
    return path


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(CPU seconds user + sys, wall seconds) of one run of ``cmd``."""
    timer = shutil.which("time") or "/usr/bin/time"
    report = cwd / "time.txt"
    if os.path.exists(timer):
        subprocess.run([timer, "-o", str(report), "-f", "%U %S %e", *cmd], cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        user, system, wall = (float(x) for x in report.read_text().split()[-3:])
        return user + system, wall
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="runs of each command (interleaved)")
    p.add_argument("--out", default=None, help="JSON file for the measurements")
    args = p.parse_args(argv)
    results: dict[str, dict[str, list[float]]] = {k: {"cpu_s": [], "wall_s": []} for k in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        write_input(cwd)
        for _ in range(args.repeats):
            for name, cmd in CASES.items():
                cpu, wall = measure(cmd, cwd)
                results[name]["cpu_s"].append(cpu)
                results[name]["wall_s"].append(wall)
    print(f"| command ({args.repeats} runs) | CPU s, min | CPU s, median | wall s, median |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| `{name}` | {min(r['cpu_s']):.2f} | {statistics.median(r['cpu_s']):.2f} | "
              f"{statistics.median(r['wall_s']):.2f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average during the run: {load:.1f} on {os.cpu_count()} CPUs")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"results": results, "load_average": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
