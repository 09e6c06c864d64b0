"""Golden outputs: every toolkit model (and each E3Relax variant) on a fixed input with fixed weights.

``tests/golden/models.pt`` stores, per case, the model config, its weights and the per-layer
positions and cells it produced in float64. The test rebuilds each model from the stored config,
loads the stored weights and compares every layer. A refactor that changes a number fails here;
one that only renames parameters adds the old -> new key prefix to :data:`RENAMES`.

Regenerate (only when a change of numbers is intended, and say so in the commit)::

    python tests/test_golden.py --regenerate [CASE ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from e3relax.registry import MODELS
from e3relax.testing import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_equivariance_models import CASES, built, structures  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "models.pt"
#: parameter renames since the golden weights were written: (old key prefix, new key prefix)
RENAMES: list[tuple[str, str]] = []
#: largest allowed deviation, relative to the largest coordinate of the output
RTOL = 1e-9


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key] = value
    return out


def _record(case: str) -> dict:
    name, overrides = CASES[case]
    config = {"name": name, **MODELS.get(name).test_config(), **overrides}
    model = built(case)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach().clone()
             for k, v in model.state_dict().items()}  # stored in float32 (half the size), run in float64
    model.load_state_dict(state)
    with torch.no_grad():
        pos, cell = run(model, structures())
    return {"config": config, "state_dict": state, "pos": pos, "cell": cell}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def test_every_case_has_a_golden_output(golden):
    assert sorted(golden) == sorted(CASES), "add or regenerate: python tests/test_golden.py --regenerate CASE"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_output(golden, case):
    if case not in golden:
        pytest.fail(f"no golden output for {case}")
    rec = golden[case]
    model = MODELS.build(dict(rec["config"])).double().eval()
    model.load_state_dict(_renamed(rec["state_dict"]), strict=True)
    with torch.no_grad():
        pos, cell = run(model, structures())
    assert len(pos) == len(rec["pos"]), f"{case}: {len(pos)} layers, golden has {len(rec['pos'])}"
    scale = max(float(p.abs().max()) for p in rec["pos"])
    for layer, (p, c, p0, c0) in enumerate(zip(pos, cell, rec["pos"], rec["cell"])):
        err = max(float((p - p0).abs().max()), float((c - c0).abs().max()))
        assert err <= RTOL * scale, f"{case} layer {layer}: output moved by {err:.3e} from the golden output"


def test_golden_catches_a_changed_weight(golden):
    rec = golden["e3relax"]
    model = MODELS.build(dict(rec["config"])).double().eval()
    state = _renamed(rec["state_dict"])
    model.load_state_dict({k: v * (1 + 1e-6) if v.is_floating_point() else v for k, v in state.items()})
    with torch.no_grad():
        pos, _ = run(model, structures())
    assert float((pos[-1] - rec["pos"][-1]).abs().max()) > RTOL * float(rec["pos"][-1].abs().max())


if __name__ == "__main__":
    if "--regenerate" not in sys.argv:
        sys.exit(__doc__)
    wanted = [a for a in sys.argv[1:] if a != "--regenerate"] or sorted(CASES)
    data = torch.load(GOLDEN, weights_only=True) if GOLDEN.exists() else {}
    for c in wanted:
        data[c] = _record(c)
        print("regenerated", c)
    GOLDEN.parent.mkdir(exist_ok=True)
    torch.save(data, GOLDEN)
