"""The shipped test kit (``e3relax.testing``) catches what it promises to catch.

Toy models with a known defect must make ``assert_relax_laws`` and the ``ModelTests`` mixin fail
with a message naming the property and layer; an importer with a known defect must make the
``ImporterTests`` mixin fail. Without these, a kit that always passes would look the same.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from data_fixtures import write_poscar_pairs
from e3relax import keys
from e3relax.datasets.importers.base import RawPair
from e3relax.datasets.importers.poscar_pairs import PoscarPairsImporter
from e3relax.model_base import RelaxModel, SymmetryLaws
from e3relax.testing import ImporterTests, ModelTests, assert_block_equivariant, assert_relax_laws
from e3relax.types import RelaxOutput


class ToyRelax(RelaxModel):
    """Two layers: ``r + a(z) (r - mean r)`` and a cell scaling; ``bad=True`` adds a fixed vector in layer 1."""

    symmetry = SymmetryLaws(translation="cartesian", wrap="none")

    def __init__(self, bad: bool = False, declared_broken: bool = False, use_batch_vector: bool = False) -> None:
        super().__init__()
        self.bad, self.use_batch_vector = bad, use_batch_vector
        self.declared_broken = declared_broken
        self.scale = nn.Embedding(119, 1)
        nn.init.zeros_(self.scale.weight)  # starts at its input, like every toolkit model
        self.strain = nn.Parameter(torch.zeros(()))
        self.shift = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))

    def laws(self) -> SymmetryLaws:
        if self.declared_broken:
            broken = {"rotation": "fixed shift", "reflection": "fixed shift"}
            return SymmetryLaws(translation="cartesian", wrap="none", broken=broken)
        return self.symmetry

    def forward(self, data) -> RelaxOutput:
        pos, cell = data[keys.POS_U], data[keys.CELL_U]
        if self.use_batch_vector:
            batch = data.batch  # None on an unbatched Data: the defect ModelTests must catch
        else:
            batch = data.batch if data.batch is not None else pos.new_zeros(pos.shape[0], dtype=torch.long)
        counts = torch.bincount(batch, minlength=cell.shape[0]).clamp(min=1).to(pos.dtype)
        mean = torch.zeros_like(cell[:, 0]).index_add_(0, batch, pos) / counts[:, None]
        p1 = pos + self.scale(data[keys.Z]) * (pos - mean[batch])
        c1 = cell * (1 + self.strain)
        p2 = p1 + self.shift if self.bad else p1 + 0.5 * (p1 - pos)
        return RelaxOutput(pos=[p1, p2], cell=[c1, c1 * (1 + self.strain)])


def test_assert_relax_laws_names_property_and_layer():
    with pytest.raises(AssertionError, match=r"ToyRelax .*rotation law violated at layer 1: error") as info:
        assert_relax_laws(ToyRelax(bad=True))
    assert "reflection law violated at layer 1" in str(info.value) and "layer 0" not in str(info.value)
    errors = assert_relax_laws(ToyRelax())
    assert set(errors) == {"rotation", "reflection", "permutation", "translation", "wrap", "batch"}
    assert len(errors["rotation"]) == 2 and max(errors["rotation"]) < 1e-12


def test_assert_relax_laws_refuses_a_stale_declaration_and_a_vacuous_check():
    with pytest.raises(AssertionError, match="rotation is declared broken .fixed shift. but holds at every layer"):
        assert_relax_laws(ToyRelax(declared_broken=True))
    errors = assert_relax_laws(ToyRelax(bad=True, declared_broken=True))  # declared and really broken
    assert min(errors["rotation"][1], errors["reflection"][1]) > 1e-3
    with pytest.raises(AssertionError, match="barely move"):
        assert_relax_laws(ToyRelax(), perturb=0.0)  # zero-initialised: the model returns its input


def test_model_unchanged_by_the_check():
    model = ToyRelax()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert_relax_laws(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert next(model.parameters()).dtype == torch.float32


class TestToyRelaxKit(ModelTests):
    model_spec = {"name": "test_testing_kit.ToyRelax"}
    unused_parameters = ("shift",)  # only the defective variant uses it
    overfit_lr = 2e-2
    overfit_factor = 0.9  # a toy with two scalars per element cannot fit labels closely


def test_model_tests_catch_an_unbatched_failure_and_a_dead_parameter():
    class Unbatched(ModelTests):
        model_spec = {"name": "test_testing_kit.ToyRelax", "use_batch_vector": True}

    with pytest.raises(TypeError):
        Unbatched().test_unbatched_data()
    Unbatched().test_batch_equals_one_by_one()  # only the unbatched path is broken

    class DeadShift(ModelTests):
        model_spec = {"name": "test_testing_kit.ToyRelax"}  # shift unused unless bad=True

    with pytest.raises(AssertionError, match=r"no gradient reaches \['shift'\]"):
        DeadShift().test_gradients_reach_every_parameter()

    class AllowedDeadShift(DeadShift):
        unused_parameters = ("shi*",)

    AllowedDeadShift().test_gradients_reach_every_parameter()


def test_overfit_test_fails_when_nothing_learns():
    class Frozen(TestToyRelaxKit):
        overfit_lr = 0.0

    with pytest.raises(AssertionError, match="no parameter changed"):
        Frozen().test_overfits_two_structures()

    class Slow(TestToyRelaxKit):
        overfit_lr = 1e-9

    with pytest.raises(AssertionError, match=r"expected at most 0.9 x the initial loss"):
        Slow().test_overfits_two_structures()


class Shift(nn.Module):
    """Adds a fixed cartesian vector: not rotation-equivariant."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c


def test_block_assertion_rejects_wrong_kinds():
    lin = nn.Linear(4, 4, bias=False)
    v = torch.randn(5, 3, 4, dtype=torch.float64)
    assert_block_equivariant(lin, (v,), kinds=("vector",), out_kinds="vector")
    with pytest.raises(ValueError, match="kind 'cartesian' needs a tensor with 3 entries along axis -1"):
        assert_block_equivariant(lin, (v,), kinds=("vector",), out_kinds="cartesian")
    shifted = Shift()
    with pytest.raises(AssertionError, match=r"Shift is not equivariant .*output 0 \(cartesian\) under rotation"):
        assert_block_equivariant(shifted, (v[:, :, 0],), kinds=("cartesian",), out_kinds="cartesian")
    with pytest.raises(ValueError, match="unknown kind 'vec'"):
        assert_block_equivariant(lin, (v,), kinds=("vec",), out_kinds="vector")
    with pytest.raises(AssertionError, match="every output is zero"):
        assert_block_equivariant(lin, (torch.zeros_like(v),), kinds=("vector",), out_kinds="vector")


# ------------------------------------------------------------------ ImporterTests on defective importers
class SwappedOrder(PoscarPairsImporter):
    """Swaps two atoms of the same species on the relaxed side: species agree, atoms do not."""

    def load(self, task):
        item = super().load(task)
        if isinstance(item, RawPair) and len(item.relaxed) >= 3:
            idx = list(range(len(item.relaxed)))
            idx[0], idx[2] = 2, 0
            item.relaxed = item.relaxed[idx]
        return item


class Duplicated(PoscarPairsImporter):
    def __iter__(self):
        items = list(super().__iter__())
        return iter(items + items[:1])


class PoscarLayout(ImporterTests):
    importer = "poscar_pairs"

    def write_layout(self, root):
        return write_poscar_pairs(root)


def test_importer_tests_catch_swapped_atoms_duplicates_and_wrong_outcomes(tmp_path):
    class Swapped(PoscarLayout):
        importer = SwappedOrder

    with pytest.raises(AssertionError, match="atom orders of the two sides disagree"):
        Swapped().test_atom_order_agrees(tmp_path / "a")

    class Dup(PoscarLayout):
        importer = Duplicated

    with pytest.raises(AssertionError, match="ids yielded more than once"):
        Dup().test_ids_are_unique(tmp_path / "b")

    class WrongExpectation(PoscarLayout):
        def write_layout(self, root):
            return {**write_poscar_pairs(root), "swapped": "ok"}

    with pytest.raises(AssertionError, match="outcomes"):
        WrongExpectation().test_outcomes_match_the_fixture(tmp_path / "c")
