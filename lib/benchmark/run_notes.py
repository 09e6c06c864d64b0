"""What ended each (model, seed) run of a comparison, and which runs diverged on test structures:
the notes of the "Every run" table."""
from __future__ import annotations

from typing import Any, Mapping

__all__ = ["stopped_by", "nonfinite_note"]


def stopped_by(rec: Mapping[str, Any], budget: Mapping[str, Any]) -> str:
    """What ended one (model, seed) run under the comparison's budget, with any rewinds before it."""
    if rec.get("stopped_nonfinite"):
        reason = f"diverged (non-finite loss at step {rec['stopped_nonfinite']['iteration']:,})"
    elif rec.get("wall_budget_hit"):
        used = budget.get("cpu_s") or budget.get("wall_s")
        reason = f"time cap ({used / 60:.0f} {'CPU-' if budget.get('cpu_s') else ''}min)" if used else "time cap"
    elif budget.get("steps") and rec["steps"] >= budget["steps"]:
        reason = "step cap"
    elif budget.get("patience"):
        reason = f"early stop ({budget['patience']} validations without improvement)"
    else:
        reason = "end of the budget"
    skipped = int(rec.get("skipped_nonfinite_steps") or 0)
    if skipped:
        reason += f"; {skipped} non-finite step{'s' * (skipped > 1)} skipped"
    rewinds = rec.get("rewinds") or []
    if rewinds:
        reason += (f", after {len(rewinds)} rewind{'s' * (len(rewinds) > 1)} (non-finite at step "
                   + ", ".join(f"{r['iteration']:,}" for r in rewinds) + ")")
    return reason


def nonfinite_note(results: Mapping[str, Any]) -> str:
    """The runs with test structures on which the model's output was not finite ("" if none)."""
    runs = [f"{e['label']} seed {seed}: {r['non_finite_predictions']} of {r['test_structures']}"
            for e in results["models"].values() for seed, r in e["seeds"].items() if r.get("non_finite_predictions")]
    return ("Test structures on which the model's output was not finite (scored as the unrelaxed input; "
            "`e3relax predict` reports them as errors): " + "; ".join(runs) + ".") if runs else ""
