"""Built-in dataset generator: prototypes, determinism, resume, CLI, and the shipped file."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase.neighborlist import neighbor_list

from e3relax.datasets.generate import GenerateConfig, generate, make_item, read_journal
from e3relax.datasets.importers.base import RawPair
from e3relax.datasets.prototypes import PROTOTYPES, build_prototype
from e3relax.registry import IMPORTERS

EMT = ["Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"]


def emt_config(n: int, seed: int = 3) -> GenerateConfig:
    return GenerateConfig(n=n, seed=seed, relaxer="emt", prototypes=["b2", "fcc", "l12"], allowed_elements=EMT,
                          max_steps=200)


@pytest.mark.parametrize("name", sorted(PROTOTYPES))
def test_prototypes_are_small_and_sane(name):
    for seed in range(8):
        atoms = build_prototype(name, np.random.default_rng(seed))
        assert atoms is not None and 1 <= len(atoms) <= 8 and all(atoms.pbc)
        assert atoms.get_volume() > 3.0 * len(atoms)
        d = neighbor_list("d", atoms, 6.0)
        assert d.min() > 1.0, f"{name}: atoms closer than 1 A ({d.min():.2f})"


def test_prototype_respects_allowed_elements():
    rng = np.random.default_rng(0)
    for _ in range(10):
        atoms = build_prototype("l12", rng, EMT)
        assert set(atoms.get_chemical_symbols()) <= set(EMT)
    assert build_prototype("perovskite", rng, EMT) is None
    with pytest.raises(KeyError, match="unknown prototype 'spinel'"):
        build_prototype("spinel", rng)


def test_items_are_deterministic_strained_and_rattled():
    cfg = GenerateConfig(n=40, seed=5)
    first = [make_item(i, cfg) for i in range(40)]
    again = [make_item(i, cfg) for i in range(40)]
    for (id_a, p_a, a), (id_b, p_b, b) in zip(first, again):
        assert id_a == id_b and p_a == p_b
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)
    assert len({i for i, _, _ in first}) == 40
    assert len({p for _, p, _ in first}) >= 10
    assert max(len(a) for *_, a in first) <= 10
    other = make_item(0, GenerateConfig(n=1, seed=6))[2]
    assert not np.array_equal(other.positions, first[0][2].positions) or len(other) != len(first[0][2])


def test_generate_resume_and_extxyz_round_trip(tmp_path):
    out = tmp_path / "gen"
    summary = generate(emt_config(3), out, workers=1, progress=False)
    assert summary["pairs"] + summary["not_converged"] + summary["failed"] == 3
    assert summary["failed"] == 0 and summary["pairs"] >= 2
    # a torn last line (interrupted write) is ignored, done items are not rerun
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"index": 4, "id": "gen3_00')
    summary = generate(emt_config(5), out, workers=1, progress=False)
    lines = (out / "results.jsonl").read_text().splitlines()
    indices = [json.loads(line)["index"] for line in lines if line.endswith("}")]
    assert sorted(indices) == [0, 1, 2, 3, 4] and len(read_journal(out)) == 5
    got = [i for i in IMPORTERS.get("extxyz")(out / "pairs.extxyz.gz") if isinstance(i, RawPair)]
    assert len(got) == summary["pairs"]
    journal = read_journal(out)
    for pair in got:
        rec = next(r for r in journal.values() if r["id"] == pair.id)
        np.testing.assert_allclose(pair.unrelaxed.positions, rec["unrelaxed"]["positions"], atol=1e-7)
        np.testing.assert_allclose(pair.relaxed.cell.array, rec["relaxed"]["cell"], atol=1e-7)
        assert pair.energy == pytest.approx(rec["energy_per_atom"])
        assert len(pair.unrelaxed) == len(pair.relaxed) and pair.split is None
    with pytest.raises(ValueError, match="different settings"):
        generate(GenerateConfig(n=5, seed=4, relaxer="emt", prototypes=["fcc"], allowed_elements=EMT), out,
                 progress=False)


def test_generate_is_reproducible_and_relaxes(tmp_path):
    from ase.calculators.emt import EMT as EMTCalc

    generate(emt_config(2, seed=9), tmp_path / "a", progress=False)
    generate(emt_config(2, seed=9), tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "pairs.extxyz.gz").read_bytes() == (tmp_path / "b" / "pairs.extxyz.gz").read_bytes()
    for pair in IMPORTERS.get("extxyz")(tmp_path / "a" / "pairs.extxyz.gz"):
        e = []
        for atoms in (pair.unrelaxed, pair.relaxed):
            atoms.calc = EMTCalc()
            e.append(atoms.get_potential_energy() / len(atoms))
        assert e[1] < e[0]
        assert np.abs(pair.relaxed.get_forces()).max() < 0.06


def test_cli_generate(tmp_path):
    from e3relax.cli.generate import add_generate_arguments, run_generate

    parser = add_generate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--n", "1", "--seed", "1", "--out", str(tmp_path), "--relaxer", "emt",
                              "--prototypes", "fcc", "--elements", *EMT, "--no-compress", "--no-progress"])
    assert run_generate(args) == 0
    assert (tmp_path / "pairs.extxyz").exists() and (tmp_path / "generation.json").exists()


def test_builtin_dataset_is_shipped():
    from e3relax.datasets import builtin

    card = builtin.card()
    assert "CHGNet" in card and "not DFT" in card and "e3relax data generate" in card
    items = list(IMPORTERS.get("builtin")())
    pairs = [i for i in items if isinstance(i, RawPair)]
    assert len(pairs) >= 250 and len(pairs) == len(items)
    splits = [p.split for p in pairs]
    assert abs(splits.count("train") / len(pairs) - 0.8) < 0.01
    assert abs(splits.count("test") / len(pairs) - 0.1) < 0.01
    assert splits == [p.split for p in IMPORTERS.get("builtin")()]  # seeded
    assert max(len(p.unrelaxed) for p in pairs) <= 10
    assert len({p.unrelaxed.get_chemical_formula() for p in pairs}) > 100


@pytest.mark.slow
def test_generate_with_chgnet(tmp_path):
    summary = generate(GenerateConfig(n=2, seed=11, prototypes=["rocksalt", "b2"], max_steps=300), tmp_path,
                       progress=False)
    assert summary["failed"] == 0 and summary["pairs"] == 2
