"""Seeded train/val/test splits, deterministic by structure id.

A source that publishes its split (split files) keeps it: the importer sets ``RawPair.split``.
Otherwise :func:`assign_split` places each id by a hash of ``(seed, id)``: the same id always
lands in the same split whatever the worker count, the order of items or the other ids, so a
split is reproducible and stable when a dataset grows. The fractions are met in expectation
(binomial spread: +-1% of 9,000 items, for example).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

#: split names for ratios of 1, 2 and 3 parts
SPLIT_NAMES = ("train", "val", "test")
#: the split of the extra (trajectory frame -> relaxed) pairs made from training pairs
FRAMES_SPLIT = "train_frames"


def parse_ratio(text: str | Sequence[float]) -> dict[str, float]:
    """``"8:1:1"`` -> ``{"train": 0.8, "val": 0.1, "test": 0.1}``; also ``"9:1"`` or ``[0.8, 0.2]``.

    Raises:
        ValueError: for more than three parts, negative parts or a zero total.
    """
    if isinstance(text, str):
        try:
            parts = [float(p) for p in text.replace(",", ":").split(":") if p.strip()]
        except ValueError as exc:
            raise ValueError(f"split ratio '{text}': parts must be numbers separated by ':' (e.g. 8:1:1)") from exc
    else:
        parts = [float(p) for p in text]
    if not 1 <= len(parts) <= len(SPLIT_NAMES):
        raise ValueError(f"split ratio {text!r}: give 1 to 3 parts (train[:val[:test]]), got {len(parts)}")
    if any(p < 0 for p in parts) or sum(parts) <= 0:
        raise ValueError(f"split ratio {text!r}: parts must be non-negative with a positive sum")
    total = sum(parts)
    return {name: p / total for name, p in zip(SPLIT_NAMES, parts)}


def unit_hash(sid: str, seed: int) -> float:
    """A number in [0, 1) determined by ``(seed, sid)`` only (SHA-256, platform independent)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{sid}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(sid: str, ratio: dict[str, float], seed: int = 0) -> str:
    """The split of structure ``sid`` under ``ratio`` (from :func:`parse_ratio`) and ``seed``."""
    u = unit_hash(sid, seed)
    acc = 0.0
    last = None
    for name, frac in ratio.items():
        if frac <= 0:
            continue
        acc += frac
        last = name
        if u < acc:
            return name
    return last  # rounding: u close to 1
