"""Crystal prototypes for the built-in dataset generator: chemically sensible, at most ~10 atoms.

Each builder takes a random generator and returns an ASE ``Atoms`` (cell rows = lattice vectors)
with a lattice constant estimated from covalent radii, so the structure starts near, not at, its
relaxed geometry. Element choices follow formal charges (A+ X-, A2+ X2-, A3+ X3-, A2+ B4+ O3, ...)
or metallic pools for intermetallics and elements.

Public API:
    ``PROTOTYPES``: name -> builder ``(rng, allowed) -> Atoms | None``.
    ``build_prototype(name, rng, allowed=None)``: one structure, or None if no allowed elements fit.
"""
from __future__ import annotations

from typing import Callable, Collection, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii

__all__ = ["PROTOTYPES", "build_prototype", "bond_length"]

# ------------------------------------------------------------------ element pools (formal charge)
CAT1 = ["Li", "Na", "K", "Rb", "Cs", "Ag", "Cu"]
CAT2 = ["Be", "Mg", "Ca", "Sr", "Ba", "Zn", "Cd", "Mn", "Fe", "Co", "Ni"]
CAT3 = ["B", "Al", "Ga", "In", "Sc", "Y", "La"]
CAT4 = ["Ti", "Zr", "Hf", "Sn", "Ge", "Si", "Mo", "W"]
CAT5 = ["Nb", "Ta", "V"]
AN1 = ["F", "Cl", "Br", "I"]
AN2 = ["O", "S", "Se", "Te"]
AN3 = ["N", "P", "As", "Sb"]
METALS = ["Al", "Ti", "V", "Cr", "Fe", "Co", "Ni", "Cu", "Zn", "Nb", "Mo", "Pd", "Ag", "Pt", "Au", "Mg", "Ir", "Rh"]
FCC = ["Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au", "Rh", "Ir", "Pb", "Ca", "Sr"]
BCC = ["Li", "Na", "K", "V", "Cr", "Fe", "Nb", "Mo", "Ta", "W", "Ba"]
HCP = ["Mg", "Ti", "Zr", "Co", "Zn", "Cd", "Be", "Hf", "Ru", "Re", "Sc", "Y"]
DIAMOND = ["C", "Si", "Ge", "Sn"]

Builder = Callable[[np.random.Generator, "Collection[str] | None"], "Atoms | None"]


def bond_length(a: str, b: str) -> float:
    """Sum of the covalent radii of elements ``a`` and ``b`` in Angstrom."""
    return float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


def _pick(rng: np.random.Generator, pool: Sequence[str], allowed: Collection[str] | None, k: int = 1) -> list[str] | None:
    """``k`` distinct elements from ``pool`` restricted to ``allowed``; None if too few remain."""
    cands = [e for e in pool if allowed is None or e in allowed]
    if len(cands) < k:
        return None
    return [cands[i] for i in rng.choice(len(cands), size=k, replace=False)]


def _frac(symbols: list[str], frac: list[list[float]], cell: np.ndarray) -> Atoms:
    return Atoms(symbols=symbols, scaled_positions=np.asarray(frac, float), cell=np.asarray(cell, float), pbc=True)


def _hex(a: float, c: float) -> np.ndarray:
    return np.array([[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, c]])


def _fcc_prim(a: float) -> np.ndarray:
    return 0.5 * a * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], float)


def _ionic_pair(rng: np.random.Generator, allowed: Collection[str] | None) -> list[str] | None:
    """A charge-balanced 1:1 cation-anion pair (A+X-, A2+X2- or A3+X3-)."""
    for _ in range(6):
        cat, an = [(CAT1, AN1), (CAT2, AN2), (CAT3, AN3)][rng.integers(3)]
        a, x = _pick(rng, cat, allowed), _pick(rng, an, allowed)
        if a and x:
            return [a[0], x[0]]
    return None


# ------------------------------------------------------------------ binary ionic / covalent
def rocksalt(rng, allowed=None):
    pair = _ionic_pair(rng, allowed)
    if pair is None:
        return None
    a = 2.0 * bond_length(*pair)
    if rng.random() < 0.5:
        return _frac(pair, [[0, 0, 0], [0.5, 0.5, 0.5]], _fcc_prim(a))
    cat = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    an = [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]
    return _frac([pair[0]] * 4 + [pair[1]] * 4, cat + an, np.eye(3) * a)


def cscl(rng, allowed=None):
    a_el, x_el = _pick(rng, ["Cs", "Rb", "K", "Tl", "Ag"], allowed), _pick(rng, AN1, allowed)
    if not a_el or not x_el:
        return None
    a = 2.0 * bond_length(a_el[0], x_el[0]) / np.sqrt(3)
    return _frac([a_el[0], x_el[0]], [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * a)


def zincblende(rng, allowed=None):
    pair = _ionic_pair(rng, allowed)
    if pair is None:
        return None
    a = 4.0 * bond_length(*pair) / np.sqrt(3)
    if rng.random() < 0.6:
        return _frac(pair, [[0, 0, 0], [0.25, 0.25, 0.25]], _fcc_prim(a))
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    return _frac([pair[0]] * 4 + [pair[1]] * 4, np.vstack([fcc, fcc + 0.25]).tolist(), np.eye(3) * a)


def wurtzite(rng, allowed=None):
    pair = _ionic_pair(rng, allowed)
    if pair is None:
        return None
    d = bond_length(*pair)
    a = d * np.sqrt(8.0 / 3.0)
    c, u = a * np.sqrt(8.0 / 3.0), 0.375
    frac = [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, u], [2 / 3, 1 / 3, 0.5 + u]]
    return _frac([pair[0], pair[0], pair[1], pair[1]], frac, _hex(a, c))


def fluorite(rng, allowed=None):
    """AX2 fluorite (A2+ with halide) or anti-fluorite (A+ 2 with chalcogenide), 3-atom cell."""
    if rng.random() < 0.6:
        a_el, x_el = _pick(rng, ["Ca", "Sr", "Ba", "Cd", "Pb", "Hg"], allowed), _pick(rng, ["F", "Cl"], allowed)
        if not a_el or not x_el:
            return None
        syms = [a_el[0], x_el[0], x_el[0]]
    else:
        a_el, x_el = _pick(rng, ["Li", "Na", "K"], allowed), _pick(rng, AN2, allowed)
        if not a_el or not x_el:
            return None
        syms = [x_el[0], a_el[0], a_el[0]]
    a = 4.0 * bond_length(syms[0], syms[1]) / np.sqrt(3)
    return _frac(syms, [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]], _fcc_prim(a))


def rutile(rng, allowed=None):
    b_el, x_el = _pick(rng, ["Ti", "Sn", "Ge", "Mn", "V", "Cr", "Ru", "Ir", "Pb"], allowed), _pick(rng, ["O"], allowed)
    if not b_el or not x_el:
        b_el, x_el = _pick(rng, ["Mg", "Zn", "Fe", "Co", "Ni"], allowed), _pick(rng, ["F"], allowed)
        if not b_el or not x_el:
            return None
    a = 2.35 * bond_length(b_el[0], x_el[0])
    c, u = 0.645 * a, 0.305
    frac = [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5], [0.5 - u, 0.5 + u, 0.5]]
    return _frac([b_el[0]] * 2 + [x_el[0]] * 4, frac, np.diag([a, a, c]))


# ------------------------------------------------------------------ ternary
def perovskite(rng, allowed=None):
    """Cubic ABX3 (5 atoms): A2+ B4+ O3, A+ B5+ O3 or A+ B2+ X3 (X = F, Cl)."""
    for _ in range(6):
        kind = rng.integers(3)
        pools = [(["Ca", "Sr", "Ba", "Pb"], CAT4[:5], ["O"]), (["Na", "K", "Rb"], CAT5, ["O"]),
                 (["K", "Rb", "Cs"], ["Mg", "Zn", "Mn", "Ni", "Co", "Pb", "Sn", "Ca"], ["F", "Cl", "Br"])][kind]
        a_el, b_el, x_el = (_pick(rng, p, allowed) for p in pools)
        if a_el and b_el and x_el:
            a = 2.0 * bond_length(b_el[0], x_el[0])
            frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
            return _frac([a_el[0], b_el[0]] + [x_el[0]] * 3, frac, np.eye(3) * a)
    return None


def _mx2_metal(rng, allowed):
    m, x = _pick(rng, ["Mo", "W", "Ti", "Zr", "Hf", "Sn", "Nb", "Ta", "Cd", "Pt"], allowed), _pick(rng, ["S", "Se", "Te", "I", "Br", "Cl"], allowed)
    return (m[0], x[0]) if m and x else None


def layered_1t(rng, allowed=None):
    """CdI2-type (1T) MX2 layer stack, 3 atoms, octahedral M."""
    mx = _mx2_metal(rng, allowed)
    if mx is None:
        return None
    d = bond_length(*mx)
    a = d * np.sqrt(2.0)
    h = np.sqrt(max(d * d - a * a / 3.0, 0.25))
    c = 2 * h + 2 * covalent_radii[atomic_numbers[mx[1]]] + 0.6
    frac = [[0, 0, 0], [1 / 3, 2 / 3, h / c], [2 / 3, 1 / 3, -h / c]]
    return _frac([mx[0], mx[1], mx[1]], frac, _hex(a, c))


def layered_2h(rng, allowed=None):
    """MoS2-type (2H) MX2, 6 atoms, trigonal-prismatic M, two layers per cell."""
    mx = _mx2_metal(rng, allowed)
    if mx is None:
        return None
    d = bond_length(*mx)
    a = d * np.sqrt(12.0 / 7.0)
    h = a / 2
    c = 2 * (2 * h + 2 * covalent_radii[atomic_numbers[mx[1]]] + 0.9)
    z = h / c
    frac = [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.25 + z], [2 / 3, 1 / 3, 0.25 - z],
            [2 / 3, 1 / 3, 0.75], [1 / 3, 2 / 3, 0.75 + z], [1 / 3, 2 / 3, 0.75 - z]]
    return _frac([mx[0], mx[1], mx[1], mx[0], mx[1], mx[1]], frac, _hex(a, c))


# ------------------------------------------------------------------ metals
def l12(rng, allowed=None):
    els = _pick(rng, METALS, allowed, k=2)
    if els is None:
        return None
    a = np.sqrt(2.0) * bond_length(*els)
    frac = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]
    return _frac([els[1], els[0], els[0], els[0]], frac, np.eye(3) * a)


def b2(rng, allowed=None):
    els = _pick(rng, METALS, allowed, k=2)
    if els is None:
        return None
    a = 2.0 * bond_length(*els) / np.sqrt(3)
    return _frac(els, [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * a)


def fcc(rng, allowed=None):
    """Conventional fcc, 4 atoms, an element or a random binary occupation."""
    els = _pick(rng, FCC, allowed, k=2)
    if els is None:
        els = _pick(rng, FCC, allowed, k=1)
        if els is None:
            return None
    syms = [els[0]] * 4 if len(els) == 1 or rng.random() < 0.5 else [els[int(i)] for i in rng.integers(0, 2, 4)]
    a = np.sqrt(2.0) * float(np.mean([bond_length(s, s) for s in syms]))
    return _frac(syms, [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]], np.eye(3) * a)


def bcc(rng, allowed=None):
    el = _pick(rng, BCC, allowed)
    if el is None:
        return None
    a = 2.0 * bond_length(el[0], el[0]) / np.sqrt(3)
    return _frac(el * 2, [[0, 0, 0], [0.5, 0.5, 0.5]], np.eye(3) * a)


def hcp(rng, allowed=None):
    el = _pick(rng, HCP, allowed)
    if el is None:
        return None
    a = bond_length(el[0], el[0])
    return _frac(el * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]], _hex(a, a * np.sqrt(8.0 / 3.0)))


def diamond(rng, allowed=None):
    el = _pick(rng, DIAMOND, allowed)
    if el is None:
        return None
    a = 4.0 * bond_length(el[0], el[0]) / np.sqrt(3)
    return _frac(el * 2, [[0, 0, 0], [0.25, 0.25, 0.25]], _fcc_prim(a))


PROTOTYPES: dict[str, Builder] = {
    "rocksalt": rocksalt, "cscl": cscl, "zincblende": zincblende, "wurtzite": wurtzite,
    "fluorite": fluorite, "rutile": rutile, "perovskite": perovskite, "layered_1t": layered_1t,
    "layered_2h": layered_2h, "l12": l12, "b2": b2, "fcc": fcc, "bcc": bcc, "hcp": hcp, "diamond": diamond,
}


def build_prototype(name: str, rng: np.random.Generator, allowed: Collection[str] | None = None) -> Atoms | None:
    """Build prototype ``name`` with random sensible elements (restricted to ``allowed`` if given).

    Raises:
        KeyError: for an unknown prototype name, listing the known ones.
    """
    if name not in PROTOTYPES:
        raise KeyError(f"unknown prototype '{name}'; known: {', '.join(sorted(PROTOTYPES))}")
    return PROTOTYPES[name](rng, allowed)
