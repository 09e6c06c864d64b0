"""Test kit for models, blocks and importers, shipped with the package.

``e3relax.testing`` holds what the toolkit's own tests use, so that a user's component is checked
the same way:

- :mod:`~e3relax.testing.structures`: small float64 triclinic crystals with brute-force graphs;
- :mod:`~e3relax.testing.equivariance`: the symmetry laws of a whole model, layer by layer
  (:func:`assert_relax_laws`);
- :mod:`~e3relax.testing.frames`: the laws of the choice of cell (another basis, another origin)
  on a whole prediction (:func:`~e3relax.testing.frames.frame_law_errors`);
- :mod:`~e3relax.testing.blocks`: O(3) equivariance of one block (:func:`assert_block_equivariant`);
- :mod:`~e3relax.testing.mixins` and :mod:`~e3relax.testing.importers`: pytest mixins
  :class:`ModelTests` and :class:`ImporterTests`; subclass one and set what to test::

      from e3relax.testing import ModelTests

      class TestMyModel(ModelTests):
          model_spec = {"name": "my_pkg.MyModel", "hidden_channels": 16}
"""
from e3relax.testing.blocks import KINDS, act, assert_block_equivariant
from e3relax.testing.equivariance import (
    PROPERTIES,
    TOLERANCE,
    assert_relax_laws,
    perturb_,
    permute,
    property_errors,
    property_layer_errors,
    random_orthogonal,
    rotate,
    run,
    signal,
    status,
    wrap,
)
from e3relax.testing.importers import ImporterTests
from e3relax.testing.mixins import ModelTests, load_model_spec
from e3relax.testing.structures import (
    SELF_IMAGE_OFFSETS,
    Structure,
    build_edges,
    default_structures,
    make_batch,
    random_structure,
    to_data,
)

__all__ = [
    "KINDS", "PROPERTIES", "TOLERANCE", "SELF_IMAGE_OFFSETS", "ImporterTests", "ModelTests", "Structure", "act", "assert_block_equivariant",
    "assert_relax_laws", "build_edges", "default_structures", "load_model_spec", "make_batch", "perturb_", "permute",
    "property_errors", "property_layer_errors", "random_orthogonal", "random_structure", "rotate", "run",
    "signal", "status", "to_data", "wrap",
]
