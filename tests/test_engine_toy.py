"""Small stand-ins shared by the engine tests: a tiny trainable model, a layer-wise loss and a seeded
in-memory dataset of 2-4 atom structures. Importing this module registers ``engine_toy_model`` and
``engine_toy_loss``; the engine resolves them by name (or by the dotted path ``test_engine_toy.ToyModel``).

The tests at the end check the stand-ins themselves: an engine test that trains the toy model
is only as good as the toy's loss, labels and LMDB writer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch_geometric.data import Data

from e3relax import keys as K
from e3relax.model_base import RelaxModel
from e3relax.registry import LOSSES, MODELS
from e3relax.types import RelaxOutput


class ToyModel(RelaxModel):
    """Per-layer displacement from an element embedding and a cell strain from the mean feature."""

    def __init__(self, hidden_channels: int = 8, num_layers: int = 2) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, hidden_channels)
        self.disp = torch.nn.ModuleList(torch.nn.Linear(hidden_channels, 3) for _ in range(num_layers))
        self.strain = torch.nn.ModuleList(torch.nn.Linear(hidden_channels, 9) for _ in range(num_layers))

    def forward(self, data) -> RelaxOutput:
        h = self.embed(data[K.Z])
        pos, cell = data[K.POS_U], data[K.CELL_U]
        num = cell.shape[0]
        counts = torch.bincount(data.batch, minlength=num).to(h.dtype).clamp(min=1)
        pooled = torch.zeros(num, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, data.batch, h)
        pooled = pooled / counts[:, None]
        out_pos, out_cell = [], []
        for disp, strain in zip(self.disp, self.strain):
            pos = pos + 0.1 * disp(h)
            cell = cell + 0.1 * cell @ strain(pooled).view(num, 3, 3)
            out_pos.append(pos)
            out_cell.append(cell)
        return RelaxOutput(pos=out_pos, cell=out_cell)


class ToyLoss(torch.nn.Module):
    """Sum over layers of mean_i ||r_i - r~_i|| + mean |L - L~| with per-layer terms."""

    def forward(self, out: RelaxOutput, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {}
        for t, (p, c) in enumerate(zip(out.pos, out.cell)):
            terms[f"pos/{t}"] = torch.linalg.vector_norm(p - batch[K.POS_R], dim=-1).mean()
            terms[f"cell/{t}"] = (c - batch[K.CELL_R]).abs().mean()
        return sum(terms.values()), terms


if "engine_toy_model" not in MODELS:
    MODELS.register("engine_toy_model")(ToyModel)
if "engine_toy_loss" not in LOSSES:
    LOSSES.register("engine_toy_loss")(ToyLoss)

#: model and loss specs for configs
MODEL_SPEC = {"name": "engine_toy_model", "hidden_channels": 8, "num_layers": 2}
LOSS_SPEC = {"name": "engine_toy_loss"}


def make_structure(index: int, dtype: torch.dtype = torch.float64) -> Data:
    """A seeded 2-4 atom structure whose relaxation shifts each atom by a function of its element."""
    gen = torch.Generator().manual_seed(1000 + index)
    n = 2 + index % 3
    z = torch.randint(1, 6, (n,), generator=gen)
    cell = (torch.eye(3, dtype=dtype) * 4 + 0.3 * torch.rand(3, 3, generator=gen, dtype=dtype)).unsqueeze(0)
    pos = torch.rand(n, 3, generator=gen, dtype=dtype) @ cell[0]
    shift = torch.stack([0.05 * z, -0.03 * z, 0.02 * z], dim=-1).to(dtype)
    return Data(**{
        K.POS_U: pos, K.CELL_U: cell, K.POS_R: pos + shift, K.CELL_R: cell * 1.02, K.Z: z,
        K.NATOMS: torch.tensor([n]), K.PBC: torch.ones(1, 3, dtype=torch.bool),
        K.EDGE_INDEX: torch.zeros(2, 0, dtype=torch.long), K.CELL_OFFSETS: torch.zeros(0, 3, dtype=torch.long),
        K.EDGE_TYPE: torch.zeros(0, dtype=torch.long), K.ID: f"toy-{index}", "num_nodes": n,
    })


def make_dataset(size: int, start: int = 0) -> list[Data]:
    return [make_structure(i) for i in range(start, start + size)]


def toy_config(run_dir, **overrides) -> dict:
    """A resolved config for a short CPU run on the toy pieces (float64, no progress bar)."""
    from e3relax.engine.config import merge, resolve_config

    user = {
        "run_dir": str(run_dir), "device": "cpu", "dtype": "float64", "seed": 3,
        "model": MODEL_SPEC, "loss": LOSS_SPEC,
        "data": {"batch_size": 4},
        "optim": {"lr": 3e-3},
        "schedule": {"epoch_length": 4, "max_epochs": 3, "plateau_patience": 1, "early_stop_patience": 5},
        "log": {"every": 2, "progress_bar": False},
    }
    return resolve_config(merge(user, overrides, strict=False))


def write_lmdb(path, indices) -> Path:
    """Write the toy structures ``indices`` as one shard of the safe LMDB format."""
    from e3relax.datasets.lmdb_format import encode_record, make_metadata
    from e3relax.datasets.writer import write_shard

    records, natoms, ids = [], [], []
    for i in indices:
        d = make_structure(i)
        rec = {k: d[k].numpy() for k in (K.POS_U, K.POS_R, K.Z, K.EDGE_INDEX, K.CELL_OFFSETS, K.EDGE_TYPE)}
        rec.update({K.CELL_U: d[K.CELL_U][0].numpy(), K.CELL_R: d[K.CELL_R][0].numpy(),
                    K.PBC: d[K.PBC][0].numpy(), K.ID: d[K.ID]})
        records.append(encode_record(rec))
        natoms.append(int(d[K.NATOMS]))
        ids.append(d[K.ID])
    meta = make_metadata(natoms=natoms, ids=ids, graph=None, source={"layout": "toy"}, split="val", shard=0,
                         num_shards=1, split_records=len(ids))
    return write_shard(path, records, metadata=meta)


# ------------------------------------------------------------------ the stand-ins themselves
def test_toy_components_are_registered():
    assert MODELS.get("engine_toy_model") is ToyModel and LOSSES.get("engine_toy_loss") is ToyLoss
    assert MODELS.get("test_engine_toy.ToyModel") is ToyModel


def test_toy_structures_are_seeded_and_labelled():
    a, b, c = make_structure(3), make_structure(3), make_structure(4)
    for key in (K.POS_U, K.CELL_U, K.POS_R, K.CELL_R, K.Z):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a[K.CELL_U], c[K.CELL_U])
    z = a[K.Z].to(torch.float64)
    torch.testing.assert_close(a[K.POS_R] - a[K.POS_U], torch.stack([0.05 * z, -0.03 * z, 0.02 * z], dim=-1))
    torch.testing.assert_close(a[K.CELL_R], 1.02 * a[K.CELL_U])
    assert [d[K.ID] for d in make_dataset(3, start=5)] == ["toy-5", "toy-6", "toy-7"]


def test_toy_loss_is_the_documented_sum_and_falls_with_training():
    from e3relax.records import collate

    torch.manual_seed(0)
    model, loss_fn = ToyModel().double(), ToyLoss()
    batch = collate(make_dataset(4))
    out = model(batch)
    assert len(out.pos) == 2 and out.pos[0].shape == batch[K.POS_U].shape and out.cell[0].shape == (4, 3, 3)
    total, terms = loss_fn(out, batch)
    want = sum(torch.linalg.vector_norm(p - batch[K.POS_R], dim=-1).mean() + (c - batch[K.CELL_R]).abs().mean()
               for p, c in zip(out.pos, out.cell))
    torch.testing.assert_close(total, want)
    assert sorted(terms) == ["cell/0", "cell/1", "pos/0", "pos/1"]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = total.item()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(batch), batch)[0]
        loss.backward()
        opt.step()
    assert loss_fn(model(batch), batch)[0].item() < 0.7 * first


def test_write_lmdb_round_trip(tmp_path):
    from e3relax.datasets.reader import LmdbDataset

    path = write_lmdb(tmp_path / "val.lmdb", [2, 7])
    ds = LmdbDataset(path, dtype=torch.float64)
    try:
        assert len(ds) == 2 and ds.ids == ["toy-2", "toy-7"]
        for i, index in enumerate((2, 7)):
            want, got = make_structure(index), ds[i]
            for key in (K.POS_U, K.POS_R, K.CELL_U, K.CELL_R, K.Z):
                assert torch.equal(got[key], want[key]), key
    finally:
        ds.close()
