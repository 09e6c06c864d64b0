"""Relax your own structures with a trained model.

Modules: :mod:`~e3relax.predict.relaxer` (the :class:`Relaxer` API), :mod:`~e3relax.predict.results`
(its trajectory and structure types), :mod:`~e3relax.predict.canonical`
(the frame a structure is predicted in: primitive cell, reduced basis, origin; and back),
:mod:`~e3relax.predict.symmetry` (spglib operations and the projection of each layer),
:mod:`~e3relax.predict.prepare` (both, for one input), :mod:`~e3relax.predict.io`
(finding, reading, naming and writing files), :mod:`~e3relax.predict.geometry` (sanity flags, vacuum
and contacts), :mod:`~e3relax.predict.pretrained` (shipped checkpoints) and
:mod:`~e3relax.predict.uncertainty` (how well the ensemble spread ranks errors).
"""
from e3relax.predict.relaxer import Relaxer
from e3relax.predict.results import RelaxTrajectory, structure_like

__all__ = ["Relaxer", "RelaxTrajectory", "structure_like"]
