"""Every data field name, in one place, with its shape.

N atoms in the batch, B structures, E edges, T trajectory frames. Cells hold lattice vectors as
ROWS: ``cell[b, c, :]`` is lattice vector ``l_c`` of structure ``b`` (ASE / pymatgen convention).
Nothing else in the toolkit spells these names as string literals.
"""
from __future__ import annotations

POS_U = "pos_u"                #: [N, 3] float, unrelaxed Cartesian positions (Angstrom)
CELL_U = "cell_u"              #: [B, 3, 3] float, unrelaxed cell, rows = lattice vectors
POS_R = "pos_r"                #: [N, 3] float, relaxed positions, unwrapped to the image nearest POS_U
CELL_R = "cell_r"              #: [B, 3, 3] float, relaxed cell in the unrelaxed frame
Z = "z"                        #: [N] long, atomic numbers 1..118
EDGE_INDEX = "edge_index"      #: [2, E] long, row 0 = source/neighbour j, row 1 = target/centre i
CELL_OFFSETS = "cell_offsets"  #: [E, 3] long, image of j: neighbour sits at pos[j] + offset @ cell
EDGE_TYPE = "edge_type"        #: [E] long, 0 = radius neighbour, 1 = self-image edge
NATOMS = "natoms"              #: [B] long, atoms per structure
PBC = "pbc"                    #: [B, 3] bool, periodic directions
ID = "id"                      #: [B] str, structure identifier
BATCH = "batch"                #: [N] long, structure index of each atom (set by PyG batching)
ENERGY = "energy"              #: [B] float, optional relaxed energy per atom (eV/atom); NaN if unknown
TRAJ_POS = "traj_pos"          #: [N, T, 3] float, optional relaxation trajectory positions
TRAJ_CELL = "traj_cell"        #: [B, T, 3, 3] float, optional trajectory cells
TAGS = "tags"                  #: [N] long, optional OC22-style tags (0 subsurface, 1 surface, 2 adsorbate)
FIXED = "fixed"                #: [N] bool, optional atoms held fixed
ROTATION_REMOVED = "rotation_removed_deg"  #: [B] float, rigid rotation stripped from the relaxed frame
PARENT = "parent"              #: str, record only: the pair a trajectory-frame pair was made from

#: Fields every record has.
REQUIRED = (POS_U, CELL_U, Z, EDGE_INDEX, CELL_OFFSETS, EDGE_TYPE, NATOMS, PBC, ID)
#: Fields that only labelled records have.
LABELS = (POS_R, CELL_R)
#: Per-structure fields (first dimension B).
GRAPH_LEVEL = (CELL_U, CELL_R, NATOMS, PBC, ENERGY, TRAJ_CELL, ROTATION_REMOVED)
#: Per-atom fields (first dimension N).
NODE_LEVEL = (POS_U, POS_R, Z, TRAJ_POS, TAGS, FIXED)
#: Per-edge fields (first dimension E, or second for EDGE_INDEX).
EDGE_LEVEL = (EDGE_INDEX, CELL_OFFSETS, EDGE_TYPE)

# edge types
EDGE_RADIUS = 0
EDGE_SELF_IMAGE = 1
