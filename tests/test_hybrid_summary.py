"""The hybrid benchmark's summary: errors per route against the label, and the FIRE steps saved."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

from e3relax.benchmark.chgnet_compare import atoms_record

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
SPEC = importlib.util.spec_from_file_location("hybrid_chgnet", BENCH / "hybrid_chgnet.py")
hyb = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(hyb)


def test_summary_scores_each_route_and_counts_saved_steps():
    refs, inputs, preds, rows = {}, {}, {}, []
    for i, steps in enumerate([(100, 40), (50, 60)]):
        ref = bulk("NaCl", "rocksalt", 5.6 + 0.1 * i)
        u = ref.copy()
        u.set_cell(ref.cell.array * 1.05, scale_atoms=True)  # 5% too large
        refs[str(i)], inputs[str(i)], preds[str(i)] = ref, u, ref.copy()
        final = atoms_record(ref)
        rows.append({"id": str(i), "input": {"steps": steps[0], "converged": True, "cpu_s": 2.0, "energy_per_atom": -3.0,
                                             "final": final},
                     "prediction": {"steps": steps[1], "converged": i == 0, "cpu_s": 1.0, "energy_per_atom": -3.0,
                                    "final": final}})
    s = hyb.summarise(rows, refs, inputs, preds, e3relax_cpu_s=0.05)
    assert s["errors"]["Dummy (the input)"]["mae_vol"] > 1.0
    for route in hyb.ROUTES[1:]:  # the prediction and both FIRE results are the label itself
        assert np.allclose(list(s["errors"][route].values()), 0.0, atol=1e-9)
    assert s["steps"]["saved_share_of_total"] == 1 - 100 / 150
    assert s["steps"]["fewer_steps_share"] == 0.5 and s["steps"]["converged_prediction"] == 0.5
    text = hyb.table(s, "t")
    assert "| E3Relax, then CHGNet + FIRE | 0.0000 | 0.0000 | 0.0000 | 50.0 / 50 | 1.05 |" in text
    assert "33% of the total" in text
