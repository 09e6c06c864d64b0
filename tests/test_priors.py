"""The atomic-volume prior: fit, scaling, checkpoint round trip, symmetry laws, engine fitting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from e3relax import keys
from e3relax.priors import AtomicVolumePrior, fit_atomic_volumes, fit_priors
from e3relax.registry import MODELS, PRIORS
from e3relax.testing import assert_relax_laws, default_structures, make_batch
from e3relax.testing.identity import assert_starts_at_input

VOLUMES = {3: 14.0, 8: 11.5, 26: 10.2, 33: 23.0}


def _synthetic(n: int = 40, seed: int = 0, noise: float = 0.0):
    rng = np.random.default_rng(seed)
    elements = np.array(sorted(VOLUMES))
    numbers, volumes = [], []
    for _ in range(n):
        z = rng.choice(elements, size=int(rng.integers(2, 9)))
        numbers.append(z)
        volumes.append(sum(VOLUMES[int(a)] for a in z) * (1 + noise * rng.standard_normal()))
    return numbers, volumes


@pytest.mark.parametrize("nonnegative", [True, False])
def test_fit_recovers_known_volumes(nonnegative):
    v, seen = fit_atomic_volumes(*_synthetic(), nonnegative=nonnegative)
    for z, want in VOLUMES.items():
        assert seen[z] and v[z] == pytest.approx(want, rel=1e-9)
    unseen = v[~seen]
    assert np.allclose(unseen, unseen[0]) and 10.0 < unseen[0] < 23.0  # mean volume per atom, never zero


def test_fit_with_noise_is_close():
    v, _ = fit_atomic_volumes(*_synthetic(200, seed=1, noise=0.02))
    for z, want in VOLUMES.items():
        assert v[z] == pytest.approx(want, rel=0.05)


def test_scaling_keeps_fractional_coordinates_and_hits_the_volume():
    prior = AtomicVolumePrior({z: 7.0 + z for z in range(1, 119)}).double()
    batch = make_batch(default_structures())
    cell = batch[keys.CELL_U].reshape(-1, 3, 3)
    pos, b, z = batch[keys.POS_U], batch.batch, batch[keys.Z].long()
    new_pos, new_cell = prior(pos, cell, z, b, cell.shape[0])
    target = torch.zeros(cell.shape[0], dtype=torch.float64).index_add_(0, b, (7.0 + z).double())
    torch.testing.assert_close(torch.linalg.det(new_cell).abs(), target, rtol=1e-12, atol=0)
    frac = torch.linalg.solve(cell[b].transpose(1, 2), pos[..., None])[..., 0]
    new_frac = torch.linalg.solve(new_cell[b].transpose(1, 2), new_pos[..., None])[..., 0]
    torch.testing.assert_close(new_frac, frac, rtol=0, atol=1e-12)
    # the shape is kept: the cell is a multiple of the input
    ratio = new_cell / cell
    assert torch.allclose(ratio, ratio.flatten(1)[:, :1, None].expand_as(ratio), rtol=1e-12)


def test_unfitted_prior_is_the_identity():
    prior = PRIORS.build("atomic_volume").double()
    pos, cell = torch.randn(4, 3, dtype=torch.float64), 5 * torch.eye(3, dtype=torch.float64)[None]
    out = prior(pos, cell, torch.tensor([1, 2, 3, 4]), torch.zeros(4, dtype=torch.long), 1)
    assert out[0] is pos and out[1] is cell


def _model_with_prior(name: str = "e3relax"):
    torch.manual_seed(0)
    spec = {"name": name, **MODELS.get(name).test_config(), "prior": {"name": "atomic_volume"}}
    return spec, MODELS.build(spec).double()


def test_prior_survives_a_checkpoint_round_trip(tmp_path):
    from e3relax.engine.checkpoint import model_from_checkpoint

    spec, model = _model_with_prior()
    model.prior.fit(*_synthetic())
    path = tmp_path / "m.pt"
    torch.save({"format_version": 1, "config": {"model": spec, "dtype": "float64"},
                "ema_model": model.state_dict()}, path)
    loaded, _ = model_from_checkpoint(path)
    assert bool(loaded.prior.fitted) and torch.equal(loaded.prior.volumes, model.prior.volumes)
    batch = make_batch(default_structures())
    model.eval()
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    for p, q in zip(a.pos + a.cell, b.pos + b.cell):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_model_with_prior_starts_at_the_prior():
    _, model = _model_with_prior()
    model.prior.fit(*_synthetic())
    batch = make_batch(default_structures())
    assert_starts_at_input(model, batch)
    out = model.eval()(batch)
    volume = torch.linalg.det(out.cell[-1]).abs()
    want = model.prior.target_volume(batch[keys.Z].long(), batch.batch, 3)
    torch.testing.assert_close(volume, want.to(volume), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["e3relax", "egnn"])
def test_symmetry_laws_with_the_prior(name):
    """E3Relax (atoms ride the cell) keeps every law; a Cartesian-translation host declares what it loses."""
    _, model = _model_with_prior(name)
    model.prior.set_volumes(torch.linspace(5.0, 40.0, model.prior.volumes.numel()))
    laws = model.laws()
    if name == "e3relax":
        assert (laws.translation, laws.wrap, laws.broken) == ("fractional", "predicted_cell", {})
    else:
        assert {"translation", "wrap"} <= set(laws.broken)
    assert_relax_laws(model)


def test_volume_prior_model_has_no_parameters_and_fits_from_data():
    model = MODELS.build("volume_prior").double()
    assert not any(True for _ in model.parameters())
    structures = default_structures(labels=True)
    records = [make_batch([s]).to_data_list()[0] for s in structures]
    fit_priors(model, records)
    assert bool(model.prior.fitted)
    fit_priors(model, [])  # already fitted: left alone
    out = model(make_batch(structures))
    assert len(out.pos) == len(out.cell) == 1


def test_engine_refuses_to_train_the_volume_prior():
    from e3relax.engine.trainer import _build_model

    with pytest.raises(ValueError, match="no trainable parameters"):
        _build_model({"model": {"name": "volume_prior"}}, torch.device("cpu"), torch.float64, False)


def test_fine_tuning_refits_the_prior_on_its_own_data(tmp_path):
    """A run started from another run's weights (init_from) fits its prior on its own training split."""
    from e3relax.engine.checkpoint import load_checkpoint
    from e3relax.engine.config import resolve_config
    from e3relax.engine.trainer import train
    from test_engine_toy import make_dataset

    def run(name, data, **extra):
        cfg = resolve_config({"run_dir": str(tmp_path / name), "device": "cpu", "seed": 0, "dtype": "float64",
                              "model": {"name": "e3relax", **MODELS.get("e3relax").test_config(),
                                        "prior": {"name": "atomic_volume"}},
                              "data": {"batch_size": 2}, "schedule": {"epoch_length": 1, "max_epochs": 1},
                              "log": {"tensorboard": False, "progress_bar": False}, **extra})
        train(cfg, datasets={"train": data, "val": data[:2]})
        return load_checkpoint(tmp_path / name / "checkpoints" / "best.pt")["model"]["prior.volumes"]

    first = make_dataset(8)
    bigger = [d.clone() for d in first]
    for d in bigger:
        d[keys.CELL_R] = d[keys.CELL_R] * 1.5  # every relaxed volume 3.375x larger
    v_first = run("first", first)
    v_tuned = run("tuned", bigger, init_from=str(tmp_path / "first"))
    seen = v_first > 0
    torch.testing.assert_close(v_tuned[seen], 3.375 * v_first[seen], rtol=1e-6, atol=0)
