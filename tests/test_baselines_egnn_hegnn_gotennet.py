"""EGNN, HEGNN and GotenNet baselines: configs build, shapes, exact position equivariance (float64),
block-level steerability of the high-degree features, and overfitting a few generated pairs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from e3nn import o3

from e3relax import keys
from e3relax.registry import BLOCKS, MODELS
from e3relax.testing import (
    make_batch, perturb_, property_errors, random_orthogonal, random_structure, rotate, run, to_data,
)

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
NAMES = ("egnn", "hegnn", "gotennet")
LAYERWISE = {"egnn": True, "hegnn": True, "gotennet": False}


@pytest.fixture(scope="module")
def structures():
    return [random_structure(5, 11, labels=True), random_structure(4, 12, labels=True)]


def _tiny(name: str, **kw):
    cls = MODELS.get(name)
    torch.manual_seed(0)
    return cls(**{**cls.test_config(), **kw}).double().eval()


@pytest.mark.parametrize("variant", ["", "_cpu"])
@pytest.mark.parametrize("name", NAMES)
def test_config_builds_and_outputs_shapes(name, variant, structures):
    cfg = yaml.safe_load((CONFIGS / f"{name}{variant}.yaml").read_text())
    assert cfg["model"]["name"] == name
    torch.manual_seed(0)
    model = MODELS.build(cfg["model"]).eval()
    batch = make_batch([random_structure(5, 11), random_structure(4, 12)])
    batch[keys.POS_U], batch[keys.CELL_U] = batch[keys.POS_U].float(), batch[keys.CELL_U].float()
    out = model(batch)
    layers = cfg["model"]["num_layers"] if LAYERWISE[name] else 1
    assert out.num_layers == layers
    for p, c in zip(out.pos, out.cell):
        assert p.shape == (9, 3) and c.shape == (2, 3, 3)
        assert torch.isfinite(p).all() and torch.isfinite(c).all()


@pytest.mark.parametrize("name", NAMES)
def test_positions_exactly_o3_equivariant_every_layer(name, structures):
    model = _tiny(name)
    perturb_(model, 0.1, seed=3)
    pos, cell = run(model, structures)
    p0 = torch.cat([s.pos for s in structures])
    assert min(float((p - p0).abs().max()) for p in pos) > 1e-3  # outputs far above the tolerance
    for det in (1.0, -1.0):
        q = random_orthogonal(7, det)
        p2, c2 = run(model, [rotate(s, q) for s in structures])
        assert len(p2) == len(pos)
        for a, b in zip(p2, pos):
            assert float((a - b @ q.T).abs().max()) < 1e-10
        # the DeepRelax lattice head reads Cartesian cell numbers: its cell does not rotate
        assert max(float((a - b @ q.T).abs().max()) for a, b in zip(c2, cell)) > 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_declared_laws_match_measurement(name, structures):
    """Every law holds to 1e-10 except the two the DeepRelax head breaks, which fail clearly."""
    model = _tiny(name)
    perturb_(model, 0.1, seed=4)
    laws = model.laws()
    assert set(laws.broken) == {"rotation", "reflection"}
    errs = property_errors(model, structures, laws)
    for prop, err in errs.items():
        if prop in laws.broken:
            assert err > 1e-4, (prop, err)
        else:
            assert err < 1e-10, (prop, err)


@pytest.mark.parametrize("name", NAMES)
def test_equivariant_lattice_head_makes_everything_exact(name, structures):
    model = _tiny(name, lattice_head={"name": "equivariant_lattice"})
    perturb_(model, 0.1, seed=5)
    assert not model.laws().broken
    errs = property_errors(model, structures, model.laws())
    assert max(errs.values()) < 1e-10, errs


def _wigner(irreps: o3.Irreps, q: torch.Tensor) -> torch.Tensor:
    """Wigner D of ``q`` in float64 (e3nn builds its generators in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(q.to(torch.float64))
    finally:
        torch.set_default_dtype(old)


def test_hegnn_steerable_features_transform_with_wigner_d(structures):
    """chi^(l) built by hegnn_init and updated by hegnn_layer rotates as D^l(R) (parity included)."""
    torch.manual_seed(0)
    init = BLOCKS.build({"name": "hegnn_init", "hidden_channels": 8, "lmax": 3}).double()
    layer = BLOCKS.build({"name": "hegnn_layer", "hidden_channels": 8, "lmax": 3}).double()
    s = structures[0]
    h = torch.randn(s.pos.shape[0], 8, dtype=torch.float64)

    def chi_of(st):
        j, i = st.edge_index
        vec = st.pos[j] + st.offsets.double() @ st.cell - st.pos[i]
        chi = init(h, vec, st.edge_index)
        _, pos, chi = layer(h, st.pos, chi, vec, st.edge_index)
        return chi, pos

    chi, pos = chi_of(s)
    assert chi[:, 1:].abs().max() > 1e-3
    for det in (1.0, -1.0):
        q = random_orthogonal(9, det)
        chi2, pos2 = chi_of(rotate(s, q))
        d = _wigner(init.irreps, q)
        assert torch.allclose(chi2, chi @ d.T, atol=1e-12)
        assert torch.allclose(pos2, pos @ q.T, atol=1e-12)


def test_gata_htr_eqff_steerable_features_rotate(structures):
    """X after GATA + HTR + EQFF rotates degree by degree; edge scalars stay invariant."""
    torch.manual_seed(0)
    f, lmax = 8, 3
    gata = BLOCKS.build({"name": "gata", "hidden_channels": f, "num_heads": 2, "lmax": lmax, "cutoff": 6.0}).double()
    htr = BLOCKS.build({"name": "htr", "hidden_channels": f, "lmax": lmax, "rejection": True}).double()
    eqff = BLOCKS.build({"name": "eqff", "hidden_channels": f}).double()
    irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(1, lmax + 1)])
    s = structures[1]
    e = s.edge_index.shape[1]
    h0 = torch.randn(s.pos.shape[0], f, dtype=torch.float64)
    t0 = torch.randn(e, f, dtype=torch.float64)

    def run_blocks(st):
        j, i = st.edge_index
        vec = st.pos[j] + st.offsets.double() @ st.cell - st.pos[i]
        rsh = o3.spherical_harmonics(irreps, vec, normalize=True, normalization="norm")
        X = torch.zeros(h0.shape[0], irreps.dim, f, dtype=torch.float64)
        h, X = gata(h0, X, t0, rsh, vec.norm(dim=-1), st.edge_index)
        t = htr(X, t0, rsh, st.edge_index)
        h, X = gata(h, X, t, rsh, vec.norm(dim=-1), st.edge_index)
        h, X = eqff(h, X)
        return h, X, t

    h, X, t = run_blocks(s)
    assert X.abs().max() > 1e-3 and (t - t0).abs().max() > 1e-3
    for det in (1.0, -1.0):
        q = random_orthogonal(13, det)
        h2, X2, t2 = run_blocks(rotate(s, q))
        d = _wigner(irreps, q)
        assert torch.allclose(h2, h, atol=1e-12) and torch.allclose(t2, t, atol=1e-12)
        assert torch.allclose(X2, torch.einsum("st,ntf->nsf", d, X), atol=1e-12)


def _pair_loss(out, batch) -> torch.Tensor:
    loss = 0.0
    for p, c in zip(out.pos, out.cell):
        loss = loss + (p - batch[keys.POS_R]).norm(dim=-1).mean() + (c - batch[keys.CELL_R]).abs().mean()
    return loss


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_few_generated_pairs(name):
    """A plain Adam loop drives the final coordinate error far below the Dummy error (input = output)."""
    torch.manual_seed(0)
    pairs = [random_structure(n, 100 + k, labels=True) for k, n in enumerate((4, 5, 3, 4))]
    batch = make_batch(pairs)
    cls = MODELS.get(name)
    model = cls(**{**cls.test_config(), "hidden_channels": 16}).double().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dummy = float((batch[keys.POS_U] - batch[keys.POS_R]).norm(dim=-1).mean())
    for _ in range(300):
        opt.zero_grad()
        loss = _pair_loss(model(batch), batch)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(batch)
    err = float((out.final_pos - batch[keys.POS_R]).norm(dim=-1).mean())
    cell_err = float((out.final_cell - batch[keys.CELL_R]).abs().mean())
    dummy_cell = float((batch[keys.CELL_U] - batch[keys.CELL_R]).abs().mean())
    assert err < 0.15 * dummy, (err, dummy)
    assert cell_err < 0.25 * dummy_cell, (cell_err, dummy_cell)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_cpu_config_trains_through_the_engine(name, tmp_path):
    """The CPU config trains with the shared Ignite engine and layer-wise loss (15-35 s each)."""
    from e3relax.engine.config import merge, resolve_config
    from e3relax.engine.trainer import train

    data = []
    for k, seed in enumerate(range(300, 308)):
        d = to_data(random_structure(3 + k % 3, seed, cutoff=5.0, labels=True))
        d[keys.PBC], d[keys.ID] = torch.ones(1, 3, dtype=torch.bool), f"gen-{seed}"
        data.append(d)
    dummy = float(torch.cat([d[keys.POS_U] - d[keys.POS_R] for d in data]).norm(dim=-1).mean())
    cfg = yaml.safe_load((CONFIGS / f"{name}_cpu.yaml").read_text())
    user = {"run_dir": str(tmp_path), "device": "cpu", "dtype": "float32", "seed": 0, "model": cfg["model"],
            "loss": {"name": "layerwise"}, "data": {"batch_size": 8}, "optim": {"lr": 3e-3},
            "schedule": {"epoch_length": 50, "max_epochs": 6, "early_stop_patience": None},
            "ema": {"decay": 0.9}, "log": {"every": 10, "progress_bar": False, "figures": False}}
    summary = train(resolve_config(merge(user, {}, strict=False)), datasets={"train": data, "val": data})
    assert summary["best_val_coord_mae"] < 0.05 * dummy, (summary["best_val_coord_mae"], dummy)
