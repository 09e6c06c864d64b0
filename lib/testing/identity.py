"""Every model starts at its input: checks of the initial prediction and of the first optimiser steps.

``initial_change(model, batch)`` measures, over every layer, the largest position change (A) and the
largest relative cell change ``max |L_hat - L_ref| / max |L_ref|`` per structure, where the reference
is the input, or the prior's prediction for a model with a prior. :func:`assert_starts_at_input`
checks them against 1e-3; :func:`assert_gradients_reach_every_parameter` runs optimiser steps and
checks that every trainable parameter got a non-zero, finite gradient in one of them.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Optional, Sequence

import torch

from e3relax import keys
from e3relax.model_base import prepare_inputs

__all__ = ["IDENTITY_TOLERANCE", "initial_change", "assert_starts_at_input", "assert_gradients_reach_every_parameter",
           "relax_loss"]

#: Angstrom for positions, relative for cells
IDENTITY_TOLERANCE = 1e-3


def _reference(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inp = model.inputs(batch, geometry=False) if hasattr(model, "inputs") else prepare_inputs(batch, geometry=False)
    return inp.pos, inp.cell, inp.batch


def initial_change(model: torch.nn.Module, batch: Any) -> tuple[float, float]:
    """(max position change in A, max relative cell change) over every layer, in eval mode, no grad."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            pos, cell, _ = _reference(model, batch)
            out = model(batch)
    finally:
        model.train(was)
    scale = cell.flatten(1).abs().amax(1)  # [B]
    dpos = max(float((p - pos).abs().max()) for p in out.pos)
    dcell = max(float(((c - cell).flatten(1).abs().amax(1) / scale).max()) for c in out.cell)
    return dpos, dcell


def assert_starts_at_input(model: torch.nn.Module, batch: Any, tol: float = IDENTITY_TOLERANCE, what: str = "") -> None:
    """Every layer's positions within ``tol`` A and cells within ``tol`` (relative) of the input."""
    dpos, dcell = initial_change(model, batch)
    name = what or type(model).__name__
    assert dpos < tol and dcell < tol, (
        f"{name} does not start at its input: positions move by {dpos:.2e} A, cells by {dcell:.2e} "
        f"(relative); tolerance {tol:g}. Zero-initialise the last projection of each update.")


def relax_loss(out: Any, batch: Any) -> torch.Tensor:
    """Mean over layers of the mean absolute error of positions and cells (needs labels)."""
    terms = [(p - batch[keys.POS_R]).abs().mean() + (c - batch[keys.CELL_R].reshape(-1, 3, 3)).abs().mean()
             for p, c in zip(out.pos, out.cell)]
    return sum(terms) / len(terms)


def assert_gradients_reach_every_parameter(
    model: torch.nn.Module, batch: Any, steps: int = 2, lr: float = 1e-3,
    loss: Callable[[Any, Any], torch.Tensor] = relax_loss, allowed: Sequence[str] = (),
    extra_loss: Optional[Callable[[Any], torch.Tensor]] = None,
) -> None:
    """``steps`` AdamW steps from the initialisation; each trainable parameter must get a non-zero
    finite gradient in at least one of them (``allowed``: fnmatch patterns of exempt names)."""
    model.train()
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    assert params, f"{type(model).__name__} has no trainable parameters"
    opt = torch.optim.AdamW(params.values(), lr=lr)
    reached: set[str] = set()
    for _ in range(steps):
        opt.zero_grad()
        out = model(batch)
        total = loss(out, batch) + (extra_loss(out) if extra_loss is not None else 0.0)
        total.backward()
        for k, p in params.items():
            if p.grad is not None:
                assert bool(torch.isfinite(p.grad).all()), f"non-finite gradient in {k}"
                if bool(p.grad.any()):
                    reached.add(k)
        opt.step()
    missing = [k for k in params if k not in reached and not any(fnmatch.fnmatch(k, a) for a in allowed)]
    assert not missing, f"no gradient reaches {missing} within {steps} optimiser steps"
