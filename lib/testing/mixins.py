"""Test mixins: subclass one, say what to test, and pytest collects a full set of checks.

A model (``ModelTests``)::

    from e3relax.testing import ModelTests

    class TestMyModel(ModelTests):
        model_spec = {"name": "my_pkg.MyModel", "hidden_channels": 16}

An importer: see :class:`e3relax.testing.importers.ImporterTests`.

The test methods use no pytest fixtures, so a mixin's tests also run as plain method calls.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from e3relax import keys
from e3relax.registry import MODELS
from e3relax.testing.equivariance import TOLERANCE, assert_relax_laws, perturb_
from e3relax.testing.structures import Structure, default_structures, make_batch, random_structure, to_data

__all__ = ["ModelTests", "load_model_spec"]


def load_model_spec(spec: Mapping[str, Any] | str | Path, use_test_config: bool = True) -> dict[str, Any]:
    """A model spec as a dict: from a mapping, a registered name or dotted path, or a YAML config file.

    Args:
        spec: ``{"name": ..., **kwargs}``; a name (``"painn"``, ``"my_pkg.MyModel"``); or the path of
            a ``.yaml``/``.yml`` file whose ``model:`` section is the spec (as ``e3relax train`` reads it).
        use_test_config: fill keywords the spec leaves out from the class's ``test_config()``.
    """
    if isinstance(spec, (str, Path)) and str(spec).endswith((".yaml", ".yml")):
        import yaml

        with open(spec, encoding="utf-8") as fh:
            config = yaml.safe_load(fh) or {}
        if not isinstance(config.get("model"), Mapping):
            raise ValueError(f"{spec}: no 'model:' section to test")
        spec = config["model"]
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise ValueError(f"model spec {spec} has no 'name'")
    if use_test_config:
        spec = {**MODELS.get(spec["name"]).test_config(), **spec}
    return spec


def _relax_loss(out: Any, batch: Any) -> torch.Tensor:
    """Mean over layers of the mean absolute error of positions and cells."""
    terms = [(p - batch[keys.POS_R]).abs().mean() + (c - batch[keys.CELL_R]).abs().mean()
             for p, c in zip(out.pos, out.cell)]
    return sum(terms) / len(terms)


class ModelTests:
    """Checks every relaxation model should pass: symmetry laws, batching, shapes, gradients, learning.

    Set :attr:`model_spec`; override the other class attributes where a model needs it.

    Attributes:
        model_spec: what :func:`load_model_spec` accepts (a spec mapping, a name or dotted path,
            or a YAML config path).
        use_test_config: fill missing keywords from the class's ``test_config()``.
        tolerance: relative float64 tolerance of the exact checks.
        seed: seed of the weights, the perturbation and the structures.
        perturb: noise added to the weights of the exact checks (a model starting at its input
            would make them vacuous).
        unused_parameters: ``fnmatch`` patterns of parameter names allowed to get no gradient.
        overfit_steps / overfit_lr / overfit_factor: Adam steps on two labelled structures, after
            which the loss must be at most ``overfit_factor`` times the initial loss.
    """

    model_spec: ClassVar[Mapping[str, Any] | str | Path | None] = None
    use_test_config: ClassVar[bool] = True
    tolerance: ClassVar[float] = TOLERANCE
    seed: ClassVar[int] = 0
    perturb: ClassVar[float] = 0.05
    unused_parameters: ClassVar[tuple[str, ...]] = ()
    overfit_steps: ClassVar[int] = 40
    overfit_lr: ClassVar[float] = 1e-2
    overfit_factor: ClassVar[float] = 0.7

    # ------------------------------------------------------------------ helpers (override freely)
    def build_model(self) -> torch.nn.Module:
        """The model in float64, built with seeded weights."""
        if self.model_spec is None:
            raise TypeError(f"{type(self).__name__}: set model_spec to the model to test")
        torch.manual_seed(self.seed)
        return MODELS.build(load_model_spec(self.model_spec, self.use_test_config)).double()

    def generic_model(self) -> torch.nn.Module:
        """The model in eval mode with seeded noise on its weights (generic, not at its input)."""
        model = self.build_model().eval()
        perturb_(model, self.perturb, self.seed)
        return model

    def make_structures(self, labels: bool = False) -> list[Structure]:
        """The test crystals (default: the kit's 4-, 6- and 5-atom triclinic cells)."""
        return default_structures(labels=labels)

    def loss(self, out: Any, batch: Any) -> torch.Tensor:
        """Training loss of the overfit test (mean absolute error, every layer)."""
        return _relax_loss(out, batch)

    def _close(self, got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        err = float((got - want).abs().max())
        limit = self.tolerance * max(1.0, float(want.abs().max()))
        assert err < limit, f"{type(self).__name__}: {what} differs by {err:.2e} (tolerance {limit:.1e})"

    # ------------------------------------------------------------------ tests
    def test_symmetry_laws(self) -> None:
        """Every law ``model.laws()`` promises holds at every layer; every declared break is real."""
        assert_relax_laws(self.build_model(), self.make_structures(), self.tolerance, perturb=self.perturb,
                          seed=self.seed)

    def test_batch_equals_one_by_one(self) -> None:
        model, structures = self.generic_model(), self.make_structures()
        with torch.no_grad():
            out = model(make_batch(structures))
            start = 0
            for b, s in enumerate(structures):
                one = model(make_batch([s]))
                for t, (p, c) in enumerate(zip(one.pos, one.cell)):
                    self._close(out.pos[t][start:start + s.num_atoms], p, f"layer {t} positions of structure {b}")
                    self._close(out.cell[t][b:b + 1], c, f"layer {t} cell of structure {b}")
                start += s.num_atoms

    def test_unbatched_data(self) -> None:
        """A single ``Data`` without a ``batch`` vector works and equals a batch of one."""
        model, s = self.generic_model(), self.make_structures()[0]
        with torch.no_grad():
            single = model(to_data(s))
            batched = model(make_batch([s]))
        assert single.num_layers == batched.num_layers
        for t in range(batched.num_layers):
            self._close(single.pos[t], batched.pos[t], f"layer {t} positions of an unbatched Data")
            self._close(single.cell[t], batched.cell[t], f"layer {t} cell of an unbatched Data")

    def test_output_shapes(self) -> None:
        model, structures = self.generic_model(), self.make_structures()
        n, b = sum(s.num_atoms for s in structures), len(structures)
        with torch.no_grad():
            out = model(make_batch(structures))
        assert len(out.pos) == len(out.cell) >= 1, f"{len(out.pos)} position and {len(out.cell)} cell layers"
        for t, (p, c) in enumerate(zip(out.pos, out.cell)):
            assert p.shape == (n, 3), f"layer {t}: positions {tuple(p.shape)}, expected ({n}, 3)"
            assert c.shape == (b, 3, 3), f"layer {t}: cells {tuple(c.shape)}, expected ({b}, 3, 3)"
            assert p.dtype == c.dtype == torch.float64, f"layer {t}: {p.dtype}/{c.dtype} from a float64 model"
            assert bool(torch.isfinite(p).all() and torch.isfinite(c).all()), f"layer {t}: non-finite output"

    def test_gradients_reach_every_parameter(self) -> None:
        model = self.generic_model().train()
        params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        assert params, f"{type(self).__name__}: the model has no trainable parameters"
        batch = make_batch(self.make_structures(labels=True))
        self.loss(model(batch), batch).backward()
        allowed = [k for k, _ in params if any(fnmatch.fnmatch(k, pat) for pat in self.unused_parameters)]
        missing = [k for k, p in params if k not in allowed and (p.grad is None or not bool(p.grad.any()))]
        assert not missing, f"no gradient reaches {missing} (list deliberately unused ones in unused_parameters)"
        bad = [k for k, p in params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        assert not bad, f"non-finite gradients in {bad}"

    def test_overfits_two_structures(self) -> None:
        """Adam on two labelled structures lowers the loss and changes the weights."""
        model = self.build_model().train()
        g = torch.Generator().manual_seed(self.seed)
        seeds = torch.randint(0, 10_000, (2,), generator=g).tolist()
        batch = make_batch([random_structure(n, s, labels=True) for n, s in zip((3, 4), seeds)])
        params = [p for p in model.parameters() if p.requires_grad]
        assert params, f"{type(self).__name__}: the model has no trainable parameters"
        before = [p.detach().clone() for p in params]
        opt = torch.optim.Adam(params, lr=self.overfit_lr)
        first = None
        for _ in range(self.overfit_steps):
            opt.zero_grad()
            loss = self.loss(model(batch), batch)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        with torch.no_grad():
            last = self.loss(model(batch), batch).item()
        assert any(not torch.equal(p, q) for p, q in zip(params, before)), "no parameter changed"
        assert last <= self.overfit_factor * first, (
            f"{type(self).__name__}: loss {first:.3e} -> {last:.3e} after {self.overfit_steps} Adam steps "
            f"(lr {self.overfit_lr}); expected at most {self.overfit_factor} x the initial loss")
