"""Every command in README.md and docs/*.md either runs as written (with a tiny budget appended where
it trains) in a fresh folder laid out like a clone with ../shared beside it, or is listed in
NOT_RUN with the reason. A documented command that is neither fails the first test."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_PROGRAMS = re.compile(r"^((e3relax|python3?|torchrun|tensorboard|pip|cp|cat|export)( |$)|OMP_NUM_THREADS=\S+ |M=)")

#: appended to every documented training command: two steps, one validation on four structures
TINY = ("schedule.epoch_length=2 schedule.max_epochs=1 data.max_val_structures=4 data.num_workers=0 "
        "model.hidden_channels=8 model.num_rbf=8 log.tensorboard=false")

#: (pattern, reason) for the documented commands that are not run here
NOT_RUN = [
    (r"pip install|python3 -m venv", "installation (what the tests run in)"),
    (r"python -m pytest", "the test suite itself"),
    (r"^python benchmarks/compare_baselines.py$", "the main job (about 5 min on 2 cores); run by hand"),
    (r"compare_baselines.py --data|^M=|^export OMP", "recorded real-data comparisons (hours), docs/results.md"),
    (r"compare_baselines.py --render", "needs the recorded comparisons above"),
    (r"<|\[--|\bOUT\b", "a template with placeholders"),
    (r"--src \.\./shared/data/\S+ --out (data/pnictides\S*|data/srnbh\S*|results/data/\S+|runs/pretrained/data/\S+)"
     r"( --seed \d+)?( --workers 2)?( --(graph-)?opt .*)?( --canonical-frame)?$",
     "a full real-dataset conversion (minutes); the same converter runs with --limit in the training sequence"),
    (r"data convert (xmno|mp|mpf_pickle|c2db|custom|legacy_lmdb|extxyz) ", "needs that dataset (see its section)"),
    (r"data generate", "CHGNet relaxes 320 structures (hours); tests/test_generate.py runs it small"),
    (r"--nproc-per-node 4", "four processes; tests/test_distributed.py runs two"),
    (r"^tensorboard", "starts a server"),
    (r"predict_speed.py", "measurement with minutes of CHGNet; needs runs/pretrained/data (the text says how)"),
    (r"train_pretrained.py", "20-minute budget per member"),
    (r"first_result.py", "a measurement (a dozen fresh processes); run by hand"),
    (r"symmetry_effect.py", "a measurement on a converted test split (minutes); needs runs/pretrained/data"),
    (r"train_throughput.py", "a training-throughput measurement (minutes)"),
    (r"hybrid_chgnet.py", "CHGNet + FIRE twice on 50 test structures (CPU-minutes); tests/test_hybrid_summary.py checks its summary"),
    (r"symmetry_training.py", "two 15-CPU-minute trainings on real data; tests/test_symmetry_train.py checks the projection"),
    (r"cpu_recipes.py|time_to_accuracy.py|baseline_init.py|data_variants.py",
     "measurements of 45-90 CPU-minutes on real data; tests/test_timed_runs.py checks their pieces"),
    (r"ft.yaml|ft_mydata|new_structures/|^(run_dir|model|data|optim|schedule):|^EOF$",
     "transfer learning on your own data; tests/test_predict_transfer.py runs this path"),
]


def documented_commands() -> list[tuple[str, str]]:
    """``(file, command)`` of every shell line in the fenced blocks of the docs (continuations joined)."""
    out = []
    for path in DOCS:
        for lang, block in re.findall(r"```(\w*)\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            if lang not in ("", "bash", "sh", "shell"):
                continue
            cur = ""
            for line in block.splitlines():
                cur = f"{cur} {line.strip()}" if cur else line.strip()
                if cur.endswith("\\"):
                    cur = cur[:-1].rstrip()
                    continue
                cmd = re.sub(r"\s+#\s.*$", "", cur).strip()
                cur = ""
                if cmd and not cmd.startswith("#") and (_PROGRAMS.match(cmd) or lang):
                    out.append((path.name, cmd))
    return out


def _not_run(cmd: str) -> str:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, cmd)), "")


def _write_structures(folder: Path) -> None:
    from ase.build import bulk
    from ase.io import write

    for name in ("my_structures", "my_cifs", "structures"):
        (folder / name).mkdir()
        write(folder / name / "NaCl.cif", bulk("NaCl", "rocksalt", a=5.6))
    write(folder / "POSCAR_1", bulk("Si", "diamond", a=5.43), format="vasp")
    write(folder / "data.extxyz", [bulk("MgO", "rocksalt", a=4.2), bulk("GaAs", "zincblende", a=5.65)])
    write(folder / "slab.cif", bulk("MgO", "rocksalt", a=4.2))


@pytest.fixture
def clone(tmp_path):
    """``tmp/repo`` with the repository's benchmarks/ and docs, ``tmp/shared`` -> the real data."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("benchmarks", "docs", "README.md"):
        os.symlink(REPO / name, root / name)
    if SHARED.exists():
        os.symlink(SHARED, tmp_path / "shared")
    _write_structures(root)
    return root


def sh(cmd: str, cwd: Path, timeout: int = 600) -> str:
    env = {**os.environ, "MPLBACKEND": "Agg", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


QUICK = ["e3relax --version", "e3relax pretrained", "e3relax data layouts",
         "python -c \"from e3relax.predict.pretrained import resolve_checkpoints; "
         "print(resolve_checkpoints('pnictides')[0])\"",
         "e3relax data convert builtin --src builtin --out data/builtin",
         "e3relax predict my_structures/ --checkpoint pnictides --out relaxed/ --format cif",
         "e3relax predict my_cifs/ POSCAR_* data.extxyz --checkpoint pnictides --out relaxed/",
         "e3relax predict my_cifs/ --checkpoint pnictides --out relaxed/ --symprec 0.1",
         "e3relax predict my_cifs/ --checkpoint pnictides --out relaxed/ --no-symmetry --no-canonical-cell",
         "python benchmarks/cap_sensitivity.py benchmarks/converged/pnictides_cap1h.json "
         "benchmarks/converged/pnictides_partial.json",
         "python benchmarks/cap_sensitivity.py benchmarks/converged/pnictides_cosine30.json "
         "benchmarks/converged/pnictides_partial.json"]

#: training.md in order; each (documented command, what is appended to it here)
TRAINING = [
    ("e3relax data convert poscar_pairs --src ../shared/data/pnictides --out data/pnictides", " --limit 40"),
    ("e3relax train --config benchmarks/configs/train_e3relax_cpu.yaml data.train=data/pnictides/train.lmdb "
     "data.val=data/pnictides/val.lmdb", " " + TINY),
    ("cp benchmarks/configs/train_e3relax_cpu.yaml run.yaml", ""),
    ("e3relax train --config run.yaml optim.lr=3e-4 data.batch_size=16 model.num_layers=3 run_dir=runs/lr3e-4",
     " " + TINY),
    ("e3relax train --resume runs/lr3e-4", ""),
    ("e3relax train --resume runs/lr3e-4 schedule.max_epochs=400", " schedule.max_epochs=2"),
    ("e3relax train --config run.yaml run_dir=runs/lr3e-4 --overwrite", " " + TINY),
    ("e3relax train --config run.yaml run_dir=runs/finetune --init-from runs/e3relax_cpu/checkpoints/best.pt",
     " " + TINY),
    ("e3relax evaluate --checkpoint runs/lr3e-4/checkpoints/best.pt --data data/pnictides/test.lmdb --out results/pn",
     ""),
    ("e3relax predict structures/ --checkpoint runs/e3relax_cpu --out out --format vasp", ""),
]
SLOW_AS_WRITTEN = [
    "e3relax data convert poscar_pairs --src ../shared/data/pnictides --out data/pn --limit 600",
    "OMP_NUM_THREADS=2 e3relax train --config benchmarks/configs/train_e3relax_cpu.yaml --run-dir runs/speed128 "
    "data.train=data/pn/train.lmdb data.val=data/pn/val.lmdb data.max_val_structures=8 schedule.epoch_length=15 "
    "schedule.max_epochs=1 log.every=5 log.tensorboard=false",
    "OMP_NUM_THREADS=2 e3relax train --config benchmarks/configs/train_e3relax_cpu.yaml --run-dir runs/speed512 "
    "data.train=data/pn/train.lmdb data.val=data/pn/val.lmdb data.max_val_structures=8 model.hidden_channels=512 "
    "model.num_rbf=128 schedule.epoch_length=5 schedule.max_epochs=1 log.every=5 log.tensorboard=false",
    "e3relax predict slab.cif --checkpoint srnbh --out out --refine chgnet --fmax 0.05",
]


def _with(cmd: str, extra: str) -> str:
    """``cmd`` with ``extra`` overrides placed right after its own KEY=VALUE overrides (argparse takes
    the overrides as one run of positional arguments)."""
    if not extra.strip():
        return cmd
    words = cmd.split()
    last = max((i for i, w in enumerate(words) if "=" in w and not w.startswith("-")), default=len(words) - 1)
    return " ".join(words[:last + 1] + extra.split() + words[last + 1:])


def test_every_documented_command_is_run_or_explained():
    ran = set(QUICK) | {c for c, _ in TRAINING} | set(SLOW_AS_WRITTEN)
    unexplained = [f"{f}: {c}" for f, c in documented_commands() if c not in ran and not _not_run(c)]
    assert not unexplained, "documented but neither run by this test nor in NOT_RUN:\n" + "\n".join(unexplained)
    assert all(any(c == d for _, d in documented_commands()) for c in ran), "a command here is no longer documented"


@pytest.mark.parametrize("cmd", QUICK)
def test_quick_commands_run_as_written(clone, cmd):
    out = sh(cmd, clone, timeout=300)
    if "predict" in cmd and "pretrained" not in cmd:
        folder = clone / "relaxed"
        assert (folder / "summary.csv").exists() and any(folder.glob("*.cif")), out


@pytest.mark.slow
@pytest.mark.data
def test_training_commands_in_order(clone):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    for cmd, tiny in TRAINING:
        sh(_with(cmd, tiny), clone)
    assert (clone / "runs/e3relax_cpu/config.yaml").exists()
    assert (clone / "runs/e3relax_cpu/checkpoints/best.pt").exists()
    assert (clone / "runs/finetune/checkpoints/last.pt").exists()
    assert (clone / "results/pn/summary.json").exists()
    assert any((clone / "out").glob("*.vasp"))


@pytest.mark.slow
@pytest.mark.data
def test_long_commands_as_written(clone):
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent")
    pytest.importorskip("chgnet")
    for cmd in SLOW_AS_WRITTEN:
        sh(cmd, clone, timeout=1800)
    assert (clone / "runs/speed512/checkpoints/last.pt").exists()
    assert "refine_steps" in (clone / "out/summary.csv").read_text()


def test_a_failed_train_leaves_no_config(clone):
    proc = subprocess.run([sys.executable, "-m", "e3relax.cli.main", "train", "--config",
                           "benchmarks/configs/train_e3relax_cpu.yaml", "run_dir=runs/nodata"], cwd=clone,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "data/pnictides/train.lmdb" in proc.stdout + proc.stderr
    assert not (clone / "runs" / "nodata" / "config.yaml").exists()
