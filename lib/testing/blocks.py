"""O(3) equivariance of one block on its own: rotate the inputs, compare with the rotated outputs.

Each input and output is described by a *kind*: how an orthogonal matrix ``Q`` acts on it.

- ``"scalar"``: unchanged (invariant features, radial bases, indices, ``batch``, sub-modules, ints);
- ``"vector"``: cartesian axis at ``-2``, ``x -> Q x`` along it: vector features ``v [N, 3, F]``,
  lattice-node vectors ``ybar [B, 3, 3, F]``;
- ``"cartesian"``: cartesian axis at ``-1``: positions ``[N, 3]``, unit vectors ``[E, 3]``,
  displacements, cells ``[B, 3, 3]`` (rows are lattice vectors);
- an ``int``: the cartesian axis itself.

Example (a message block ``(s, v, rbf, unit, edge_index) -> (s, v)``)::

    assert_block_equivariant(block, (s, v, rbf, unit, edge_index),
                             kinds=("scalar", "vector", "scalar", "cartesian", "scalar"),
                             out_kinds=("scalar", "vector"))
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence, Union

import torch

from e3relax.testing.equivariance import TOLERANCE, perturb_, random_orthogonal

__all__ = ["KINDS", "Kind", "act", "assert_block_equivariant"]

Kind = Union[str, int]
#: named kinds and their cartesian axis (None: invariant)
KINDS: dict[str, int | None] = {"scalar": None, "vector": -2, "cartesian": -1}


def _axis(kind: Kind) -> int | None:
    if isinstance(kind, bool) or not isinstance(kind, (str, int)):
        raise TypeError(f"kind must be one of {sorted(KINDS)} or an int axis, got {kind!r}")
    if isinstance(kind, int):
        return kind
    if kind not in KINDS:
        raise ValueError(f"unknown kind '{kind}'; use one of {sorted(KINDS)} or an int axis")
    return KINDS[kind]


def act(q: torch.Tensor, x: Any, kind: Kind) -> Any:
    """``x`` transformed by the orthogonal matrix ``q`` [3, 3] as its ``kind`` says."""
    axis = _axis(kind)
    if axis is None:
        return x
    if not torch.is_tensor(x) or x.shape[axis] != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"kind {kind!r} needs a tensor with 3 entries along axis {axis}, got {shape}")
    return torch.movedim(torch.movedim(x, axis, -1) @ q.to(x.dtype).T, -1, axis)


def _double(x: Any) -> Any:
    return x.double() if torch.is_tensor(x) and x.is_floating_point() else x


def _as_tuple(out: Any) -> tuple:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def assert_block_equivariant(
    block: torch.nn.Module,
    inputs: Sequence[Any],
    kinds: Sequence[Kind],
    out_kinds: Kind | Sequence[Kind],
    *,
    call: Callable[..., Any] | None = None,
    reflections: bool = True,
    tol: float = TOLERANCE,
    perturb: float = 0.0,
    seed: int = 0,
) -> float:
    """Assert ``block(*R inputs) == R block(*inputs)`` for random rotations (and reflections) R.

    The check runs in float64 on a copy of ``block`` (floating inputs are converted).

    Args:
        block: the module under test.
        inputs: positional inputs of the call.
        kinds: one kind per input (see the module docstring).
        out_kinds: the kind of the output, or one kind per element of a tuple output.
        call: ``call(block, *inputs)`` instead of ``block(*inputs)`` (e.g. ``lambda b, *x: b.delta(*x)``).
        reflections: also check an improper rotation (det -1); False for blocks that are only
            SO(3)-equivariant (e.g. ones using cross products as vectors).
        tol: tolerance relative to ``max(1, largest output entry)``.
        perturb: scale of seeded noise added to the copy's parameters first (for zero-initialised
            last projections, whose outputs would make the check vacuous).
        seed: seed of the rotations and of the perturbation.

    Returns:
        The largest deviation found.

    Raises:
        AssertionError: naming the block, the output, the transformation and the error; also when
            every output is zero (the check would be vacuous).
    """
    name = type(block).__name__
    if len(kinds) != len(inputs):
        raise ValueError(f"{name}: {len(inputs)} inputs but {len(kinds)} kinds")
    block = copy.deepcopy(block).double()
    if perturb:
        perturb_(block, perturb, seed)
    call = call or (lambda b, *x: b(*x))
    inputs = [_double(x) for x in inputs]
    with torch.no_grad():
        base = _as_tuple(call(block, *inputs))
    out_kinds = (out_kinds,) * len(base) if isinstance(out_kinds, (str, int)) else tuple(out_kinds)
    if len(out_kinds) != len(base):
        raise ValueError(f"{name}: {len(base)} outputs but {len(out_kinds)} output kinds")
    scale = max(float(o.abs().max()) if o.numel() else 0.0 for o in base)
    if scale == 0.0:
        raise AssertionError(f"{name}: every output is zero, so the equivariance check would be vacuous; "
                             "pass perturb > 0 or generic inputs")
    limit = tol * max(1.0, scale)
    worst, failures = 0.0, []
    for det in (1.0, -1.0) if reflections else (1.0,):
        q = random_orthogonal(seed + (1 if det > 0 else 2), det)
        with torch.no_grad():
            got = _as_tuple(call(block, *[act(q, x, k) for x, k in zip(inputs, kinds)]))
        what = "rotation" if det > 0 else "reflection"
        for i, (o, g, k) in enumerate(zip(base, got, out_kinds)):
            err = float((g - act(q, o, k)).abs().max()) if o.numel() else 0.0
            worst = max(worst, err)
            if not err < limit:
                failures.append(f"output {i} ({k}) under {what}: error {err:.2e} > tolerance {limit:.1e}")
    if failures:
        raise AssertionError(f"{name} is not equivariant (output scale {scale:.2e}): " + "; ".join(failures))
    return worst
