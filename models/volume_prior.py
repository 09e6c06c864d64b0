"""The atomic-volume prior alone: the input scaled isotropically to the sum of fitted per-element volumes."""
from __future__ import annotations

from typing import Mapping, Optional

from e3relax.model_base import SymmetryLaws
from e3relax.models.dummy import Dummy
from e3relax.registry import MODELS, PRIORS


@MODELS.register("volume_prior")
class VolumePrior(Dummy):
    """The prior's prediction as a model (a baseline row): ``(s r_u, s L_u)`` with
    ``s = (sum_i v_{Z_i} / V_u)^(1/3)``, fractional coordinates kept (:class:`e3relax.priors.AtomicVolumePrior`).

    No trainable parameters: ``e3relax train`` refuses it; fit it from data instead
    (``model.prior.fit_dataset(train)``, or :func:`e3relax.priors.fit_priors`) and evaluate it like
    the Dummy. Unfitted it is the Dummy. Laws: rotation, reflection, permutation; fractional
    translation and wrap by the predicted cell (atoms ride the scaled cell), exactly.

    Args:
        volumes: optional fixed ``{Z: v_Z}`` (A^3); otherwise fit before use.
        nonnegative: non-negative least squares.

    Shapes:
        data -> RelaxOutput(pos=[s r_u [N, 3]], cell=[s L_u [B, 3, 3]])
    """

    symmetry = SymmetryLaws(translation="fractional", wrap="predicted_cell")

    def __init__(self, volumes: Optional[Mapping[int, float]] = None, nonnegative: bool = True) -> None:
        super().__init__()
        self.set_prior(PRIORS.build({"name": "atomic_volume", "volumes": volumes, "nonnegative": nonnegative}))

    @classmethod
    def test_config(cls) -> dict:
        return {"volumes": {z: 8.0 + 0.5 * z for z in range(1, 119)}}
