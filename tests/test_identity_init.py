"""Every registered model, every relax_net stack and every CPU config starts at its input, on real cells.

At initialisation, in eval mode, every layer's positions are within 1e-3 A and cells within 1e-3
(relative) of the input (of the prior's prediction for a model with a prior), at widths 16 and 512
(every width from 16 to 512 in the slow sweep), on a handful of pairs of each real dataset converted
on the fly from ../shared/data (skipped with a message where it is absent). Gradients reach every
parameter within the first two optimiser steps. Parametrised over the registry: a new model is
checked without new test code.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from data_fixtures import graph_spec
from e3relax.benchmark.suite import config_path
from e3relax.datasets.convert import convert
from e3relax.datasets.reader import LmdbDataset
from e3relax.model_base import prepare_inputs
from e3relax.records import collate
from e3relax.registry import IMPORTERS, LOSSES, MODELS
from e3relax.testing import default_structures, load_model_spec, make_batch, perturb_
from e3relax.testing.identity import (assert_gradients_reach_every_parameter, assert_starts_at_input, initial_change,
                                     relax_loss)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CONFIGS = ROOT / "benchmarks" / "configs"
TOOLKIT_MODELS = [n for n in MODELS.names() if MODELS.get(n).__module__.startswith("e3relax.")]
#: relax_net stacks and E3Relax variants beyond each model's test_config()
STACKS = {
    "e3relax[no_lattice_nodes]": {"name": "e3relax", "lattice_nodes": False},
    "e3relax[no_lattice_nodes,deeprelax_head]": {"name": "e3relax", "lattice_nodes": False,
                                                 "cell_head": "deeprelax_lattice"},
    "e3relax[no_refinement]": {"name": "e3relax", "progressive": False},
    "e3relax[cartesian]": {"name": "e3relax", "affine_strain_positions": False},
    "e3relax[centroid]": {"name": "e3relax", "lattice_atom_mode": "centroid"},
    "e3relax[prior]": {"name": "e3relax", "prior": {"name": "atomic_volume", "volumes": {z: 12.0 + 0.2 * z
                                                                                        for z in range(1, 119)}}},
    "relax_net[stack.yaml]": CONFIGS / "e3relax_stack.yaml",
    "relax_net[cpu.yaml]": CONFIGS / "relax_net_cpu.yaml",
}
CASES = {**{n: {"name": n} for n in TOOLKIT_MODELS}, **STACKS}
#: each model's CPU config (benchmarks/configs/<name>_cpu.yaml, E3Relax's CPU training recipe)
CPU_CONFIGS = sorted(p.name for n in MODELS.names() if (p := config_path(CONFIGS, n)) and p.name.endswith("_cpu.yaml"))


@functools.lru_cache(maxsize=None)
def real_batch(dataset: str):
    """A batch of a few real pairs of one dataset, converted into a temporary folder (float64)."""
    import tempfile

    folder = DATA / dataset
    if not folder.is_dir():
        pytest.skip(f"real data folder '{folder}' is absent (expected ../shared/data beside the repository)")
    spec = ({"name": "poscar_pairs", "src": folder} if dataset == "pnictides"
            else {"name": "vasp_dirs", "src": folder})
    out = Path(tempfile.mkdtemp(prefix=f"identity_{dataset}_"))
    convert(IMPORTERS.build(spec), out, layout=spec["name"], graph=graph_spec(), workers=1, limit=12, progress=False)
    records = []
    for split in ("train", "val", "test"):
        if (out / f"{split}.lmdb").exists():
            ds = LmdbDataset(out / f"{split}.lmdb", dtype=torch.float64)
            records += [ds[k] for k in range(len(ds))]
    assert records, f"no pair of {folder} converted"
    return collate(records[:6])


def build(case: str, width: int | None = None, seed: int = 0) -> torch.nn.Module:
    spec = CASES[case]
    spec = load_model_spec(spec, use_test_config=True) if not isinstance(spec, Path) else load_model_spec(spec)
    if width is not None and "hidden_channels" in spec:
        spec["hidden_channels"] = width
    torch.manual_seed(seed)
    return MODELS.build(spec).double()


def _check(case: str, width: int, dataset: str) -> None:
    assert_starts_at_input(build(case, width), real_batch(dataset), what=f"{case} at width {width} on {dataset}")


@pytest.mark.data
@pytest.mark.parametrize("dataset", ["pnictides", "srnbh"])
@pytest.mark.parametrize("width", [16, 512])
@pytest.mark.parametrize("case", list(CASES))
def test_starts_at_input_on_real_cells(case, width, dataset):
    _check(case, width, dataset)


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("dataset", ["pnictides", "srnbh"])
@pytest.mark.parametrize("width", [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512])
@pytest.mark.parametrize("case", list(CASES))
def test_starts_at_input_every_width(case, width, dataset):
    _check(case, width, dataset)


@pytest.mark.data
@pytest.mark.parametrize("config", CPU_CONFIGS)
def test_cpu_config_starts_at_input(config):
    """Each model at its CPU size (benchmarks/configs/*_cpu.yaml) starts at its input on both datasets."""
    torch.manual_seed(0)
    model = MODELS.build(load_model_spec(CONFIGS / config, use_test_config=False)).double()
    for dataset in ("pnictides", "srnbh"):
        assert_starts_at_input(model, real_batch(dataset), what=f"{config} on {dataset}")


def _old_init_keys() -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("baseline_init", ROOT / "benchmarks" / "baseline_init.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.OLD_INIT


@pytest.mark.parametrize("name", sorted(_old_init_keys()))
def test_old_initialisation_keys_of_the_baseline_benchmark(name):
    """benchmarks/baseline_init.py's "old" keys are valid for the model's CPU config and bring back
    an initialisation that moves away from the input; without them the model starts at its input."""
    from e3relax.engine.config import apply_overrides

    old = _old_init_keys()[name]
    config = {"model": load_model_spec(CONFIGS / f"{name}_cpu.yaml", use_test_config=False)}
    changed = apply_overrides(config, [f"{k}={'null' if v is None else str(v).lower()}" for k, v in old.items()])
    batch = make_batch(default_structures())
    for spec, starts in ((config["model"], True), (changed["model"], False)):
        torch.manual_seed(0)
        model = MODELS.build(spec).double()
        dpos, dcell = initial_change(model, batch)
        assert (max(dpos, dcell) < 1e-12) is starts, f"{name} {spec}: change {dpos:.2e} A, {dcell:.2e}"


def test_paper_faithful_keeps_the_reference_initialisation():
    """paper_faithful starts away from its input on purpose (the reference's initialisation)."""
    torch.manual_seed(0)
    model = MODELS.build({"name": "e3relax", **MODELS.get("e3relax").test_config(), "paper_faithful": True}).double()
    batch = make_batch(default_structures())
    with pytest.raises(AssertionError, match="does not start at its input"):
        assert_starts_at_input(model, batch)


def _loss(case: str):
    """The loss its CPU config trains with (layer-wise position/cell MAE otherwise)."""
    name = CASES[case]["name"] if isinstance(CASES[case], dict) else "relax_net"
    path = config_path(CONFIGS, name)
    if path is not None:
        import yaml

        spec = (yaml.safe_load(path.read_text()) or {}).get("loss")
        if spec and (spec if isinstance(spec, str) else spec.get("name")) != "layerwise":
            fn = LOSSES.build(spec)
            return lambda out, batch: fn(out, batch)[0]
    return relax_loss


def _structurally_unused(model: torch.nn.Module, batch, loss) -> list[str]:
    """Parameters that get no gradient even at generic (perturbed) weights: not used by the loss."""
    import copy

    generic = copy.deepcopy(model)
    perturb_(generic, 0.05, 0)
    generic.train()
    loss(generic(batch), batch).backward()
    return [k for k, p in generic.named_parameters() if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_reach_every_parameter_within_two_steps(case):
    model = build(case)
    if not any(p.requires_grad for p in model.parameters()):
        pytest.skip(f"{case} has no trainable parameters")
    batch = make_batch(default_structures(labels=True))
    loss = _loss(case)
    unused = _structurally_unused(model, batch, loss)
    assert_gradients_reach_every_parameter(model, batch, steps=2, loss=loss, allowed=unused)


def test_prior_reference_is_the_prior_prediction():
    """For a model with a prior, "identity" means the prior's prediction: a scaled input, not the input."""
    model = build("e3relax[prior]")
    batch = make_batch(default_structures())
    scaled = model.inputs(batch, geometry=False)
    raw = prepare_inputs(batch, geometry=False)
    assert not torch.allclose(scaled.cell, raw.cell)
    assert_starts_at_input(model, batch)


@pytest.mark.parametrize("case", list(CASES))
def test_zero_initialised_projections_train_at_a_scaled_rate(case):
    """The engine's optimiser groups: the zeroed last projections get ZERO_INIT_LR_SCALE x the run's rate."""
    from e3relax.model_base import ZERO_INIT_LR_SCALE, param_groups

    model = build(case)
    if not any(p.requires_grad for p in model.parameters()):
        pytest.skip(f"{case} has no trainable parameters")
    groups = {g["lr_scale"]: g for g in param_groups(model, 1e-3)}
    assert set(groups) == {1.0, ZERO_INIT_LR_SCALE}
    assert groups[ZERO_INIT_LR_SCALE]["lr"] == pytest.approx(1e-3 * ZERO_INIT_LR_SCALE)
    assert all(not bool(p.any()) for p in groups[ZERO_INIT_LR_SCALE]["params"] if p.dim() > 1)
