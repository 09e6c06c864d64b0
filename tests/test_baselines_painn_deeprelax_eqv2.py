"""PaiNN, DeepRelax and EquiformerV2 baselines: configs build, shapes, symmetry of positions (float64),
block-level checks (SO(2) convolution, Wigner frames, intra-cell edges, solver), and overfitting."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from e3nn import o3

from e3relax import keys
from e3relax.nn import deeprelax as dr
from e3relax.nn.equiformer_v2.so2 import SO2Convolution
from e3relax.nn.equiformer_v2.so3 import edge_wigner, rotate_from_frame, rotate_to_frame
from e3relax.registry import LOSSES, MODELS
from e3relax.testing import (
    make_batch, perturb_, property_errors, random_orthogonal, random_structure, rotate, run,
)

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
NAMES = ("painn", "deeprelax", "equiformer_v2")


@pytest.fixture(scope="module")
def structures():
    return [random_structure(5, 21, labels=True), random_structure(4, 22, labels=True)]


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
    if name == "deeprelax":
        model.solver.num_steps = 3  # shapes only
    batch = make_batch([random_structure(5, 11), random_structure(4, 12)])
    batch[keys.POS_U], batch[keys.CELL_U] = batch[keys.POS_U].float(), batch[keys.CELL_U].float()
    with torch.no_grad():
        out = model(batch)
    assert out.num_layers == 1
    assert out.pos[0].shape == (9, 3) and out.cell[0].shape == (2, 3, 3)
    assert torch.isfinite(out.pos[0]).all() and torch.isfinite(out.cell[0]).all()


@pytest.mark.parametrize("name", ["painn", "equiformer_v2"])
def test_positions_exactly_se3_equivariant_with_deeprelax_head(name, structures):
    """Positions rotate exactly even with the (non-equivariant) DeepRelax lattice head."""
    model = _tiny(name, lattice_head="deeprelax_lattice")
    perturb_(model, 0.1, seed=3)
    pos, cell = run(model, structures)
    q = random_orthogonal(7, 1.0)
    pos2, cell2 = run(model, [rotate(s, q) for s in structures])
    assert (pos[0] - torch.cat([s.pos for s in structures])).abs().max() > 1e-3
    torch.testing.assert_close(pos2[0], pos[0] @ q.T, atol=1e-10, rtol=0)
    assert (cell2[0] - cell[0] @ q.T).abs().max() > 1e-3  # the DeepRelax head does not rotate


def test_painn_positions_reflection_equivariant(structures):
    model = _tiny("painn", lattice_head="equivariant_lattice")
    perturb_(model, 0.1, seed=4)
    errs = property_errors(model, structures, model.laws())
    assert max(errs.values()) < 1e-10


def test_equiformer_v2_reflection_is_broken_and_s2_is_near_exact(structures):
    model = _tiny("equiformer_v2", lattice_head="equivariant_lattice")
    perturb_(model, 0.1, seed=5)
    errs = property_errors(model, structures, model.laws())
    assert errs["rotation"] < 1e-10 and errs["reflection"] > 1e-5
    s2 = _tiny("equiformer_v2", lattice_head="equivariant_lattice", activation="separable_s2_activation")
    perturb_(s2, 0.1, seed=5)
    errs = property_errors(s2, structures, s2.laws())
    assert errs["rotation"] < 1e-5  # quadrature error of the S2 grid only


def test_wigner_frame_maps_polar_axis_to_edge():
    vec = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    d = edge_wigner(vec, 2)
    sh = o3.spherical_harmonics(o3.Irreps.spherical_harmonics(2), vec, normalize=True)
    y = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand(6, 3)
    sh_y = o3.spherical_harmonics(o3.Irreps.spherical_harmonics(2), y, normalize=True)
    torch.testing.assert_close(rotate_to_frame(d, sh[:, :, None])[..., 0], sh_y, atol=1e-12, rtol=0)
    torch.testing.assert_close(rotate_from_frame(d, rotate_to_frame(d, sh[:, :, None])), sh[:, :, None],
                               atol=1e-12, rtol=0)


def test_so2_convolution_commutes_with_roll_about_polar_axis():
    torch.manual_seed(0)
    conv = SO2Convolution(3, 4, lmax=3, mmax=2, num_extra=2, edge_channels=5).double()
    x = torch.randn(7, 16, 3, dtype=torch.float64)
    e = torch.randn(7, 5, dtype=torch.float64)
    gamma = torch.tensor(0.7, dtype=torch.float64)
    roll = torch.block_diag(*[o3.wigner_D(l, torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64),
                                          gamma) for l in range(4)])
    y, extra = conv(x, e)
    y2, extra2 = conv(torch.einsum("ab,ebc->eac", roll, x), e)
    torch.testing.assert_close(y2, torch.einsum("ab,ebc->eac", roll, y), atol=1e-10, rtol=0)
    torch.testing.assert_close(extra2, extra, atol=1e-10, rtol=0)
    assert y[:, [9, 15]].abs().max() == 0  # |m| = 3 > mmax (l = 3, m = -3 and +3)


def test_intra_cell_edges_match_brute_force():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(9, 3, dtype=torch.float64, generator=g) * 3
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    ei = dr.intra_cell_edges(pos, batch, max_neighbors=3)
    want = set()
    for i in range(9):
        cand = [j for j in range(9) if j != i and batch[j] == batch[i]]
        cand.sort(key=lambda j: float((pos[j] - pos[i]).norm()))
        want |= {(j, i) for j in cand[:3]}
    assert set(map(tuple, ei.T.tolist())) == want and ei.shape[1] == len(want)


def test_solver_recovers_exact_distances(structures):
    """With exact distances and tiny sigma, the solver moves pos_u towards pos_r."""
    batch = make_batch(structures)
    model = _tiny("deeprelax")
    b = batch[keys.BATCH]
    ei, off, nd = model.edge_sets(batch, batch[keys.POS_U], b)
    out = type("O", (), {})()
    out.extras = {dr.DISPLACE_EDGE_INDEX: ei[:, :nd], dr.RELAXED_EDGE_INDEX: ei, dr.RELAXED_CELL_OFFSETS: off}
    d_disp, d_rel = LOSSES.get("laplace_distance").targets(out, batch)
    solver = dr.EDGSolver(num_steps=300, lr=0.01)
    small_d, small_r = torch.full_like(d_disp, -5.0), torch.full_like(d_rel, -5.0)
    x = solver(batch[keys.POS_U], batch[keys.CELL_R], b, ei[:, :nd], d_disp, small_d, ei, off, d_rel, small_r)
    before = (batch[keys.POS_U] - batch[keys.POS_R]).norm(dim=-1).mean()
    after = (x - batch[keys.POS_R]).norm(dim=-1).mean()
    assert after < 0.5 * before


def _overfit(model, batch, loss_fn, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss, _ = loss_fn(model(batch), batch)
        loss.backward()
        opt.step()
    model.eval()


def _plain_loss(out, batch):
    p = (out.final_pos - batch[keys.POS_R]).norm(dim=-1).mean()
    c = (out.final_cell - batch[keys.CELL_R]).abs().mean()
    return p + c, {}


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_handful_of_pairs_below_dummy(name):
    structures = [random_structure(n, 40 + n, labels=True) for n in (3, 4, 5, 4)]
    batch = make_batch(structures)
    torch.manual_seed(0)
    cfg = {**MODELS.get(name).test_config(), "hidden_channels": 16}
    model = MODELS.build({"name": name, **cfg}).double()
    loss_fn = LOSSES.build("laplace_distance") if name == "deeprelax" else _plain_loss
    _overfit(model, batch, loss_fn, steps=150, lr=3e-3)
    with torch.no_grad():
        out = model(batch)
    dummy_pos = (batch[keys.POS_U] - batch[keys.POS_R]).norm(dim=-1).mean()
    dummy_cell = (batch[keys.CELL_U] - batch[keys.CELL_R]).abs().mean()
    pos_err = (out.final_pos - batch[keys.POS_R]).norm(dim=-1).mean()
    cell_err = (out.final_cell - batch[keys.CELL_R]).abs().mean()
    assert cell_err < 0.5 * dummy_cell, (name, float(cell_err), float(dummy_cell))
    assert pos_err < 0.8 * dummy_pos, (name, float(pos_err), float(dummy_pos))


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_the_engine(name, tmp_path):
    """The Ignite engine builds the model and its loss from specs, trains, and evaluates (solver on)."""
    from e3relax.engine.config import resolve_config
    from e3relax.engine.trainer import train

    from e3relax.testing import to_data

    data = []
    for k, n in enumerate((3, 4, 5)):
        d = to_data(random_structure(n, 70 + k, labels=True))
        d[keys.ID], d[keys.PBC] = f"s{k}", torch.ones(1, 3, dtype=torch.bool)
        data.append(d)
    loss = {"name": "laplace_distance"} if name == "deeprelax" else {"name": "layerwise"}
    user = {"run_dir": str(tmp_path), "device": "cpu", "dtype": "float64", "seed": 0,
            "model": {"name": name, **MODELS.get(name).test_config()}, "loss": loss,
            "data": {"batch_size": 3}, "optim": {"lr": 3e-3},
            "schedule": {"epoch_length": 5, "max_epochs": 2, "early_stop_patience": None},
            "log": {"every": 5, "progress_bar": False, "figures": False, "tensorboard": False}}
    out = train(resolve_config(user), datasets={"train": data, "val": data})
    assert out["iteration"] == 10
    assert out["best_val_coord_mae"] == out["best_val_coord_mae"]  # finite, not NaN
