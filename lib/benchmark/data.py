"""The dataset of a comparison: the built-in set, an LMDB folder, or a layout converted on the fly.

Every form ends as a folder holding ``train.lmdb``, ``val.lmdb`` and ``test.lmdb`` (the converter's
output). A conversion is reused when its ``report.json`` exists in the target folder.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["SPLITS", "prepare_data", "split_paths"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_REPORT = "report.json"


def split_paths(folder: str | Path) -> dict[str, Path]:
    """``{split: folder/<split>.lmdb}`` of a converted dataset.

    Raises:
        FileNotFoundError: naming the folder and the missing split.
    """
    folder = Path(folder)
    out = {s: folder / f"{s}.lmdb" for s in SPLITS}
    missing = [s for s, p in out.items() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"dataset folder '{folder}' has no {', '.join(m + '.lmdb' for m in missing)}; "
                                "convert it with 'e3relax data convert' (train, val and test splits are needed)")
    return out


def prepare_data(dataset: str | Path | None, layout: str | None, cache: str | Path, *,
                 split_ratio: str = "8:1:1", seed: int = 0, limit: int | None = None,
                 workers: int = 1) -> tuple[dict[str, Path], dict[str, Any]]:
    """Resolve the comparison's dataset into LMDB split paths, converting when needed.

    Args:
        dataset: an LMDB folder (with ``layout`` None), a layout's source path (with ``layout``),
            or None / "builtin" for the built-in CHGNet-relaxed set.
        layout: importer name (``poscar_pairs``, ``vasp_dirs``, ...) to convert ``dataset`` with.
        cache: folder the conversion is written to (``cache/<layout or builtin>``).
        split_ratio, seed, limit, workers: passed to the converter.

    Returns:
        (split paths, description: ``{"name", "source", "layout", "folder"}``).
    """
    from e3relax.datasets.convert import convert

    if layout is None and dataset not in (None, "builtin"):
        folder = Path(dataset)
        return split_paths(folder), {"name": folder.name, "source": str(folder), "layout": "lmdb",
                                     "folder": str(folder)}
    if layout is None or layout == "builtin":
        from e3relax.datasets.importers.extxyz import BuiltinImporter

        importer, layout, source = BuiltinImporter(seed=seed), "builtin", "built-in CHGNet-relaxed set"
    else:
        from e3relax.registry import IMPORTERS

        if dataset is None:
            raise ValueError(f"layout '{layout}' needs the source path of the data (--data PATH)")
        importer, source = IMPORTERS.get(layout)(dataset), str(dataset)
    folder = Path(cache) / layout
    if (folder / _REPORT).exists():
        log.info("reusing the converted %s data in %s", layout, folder)
    else:
        log.info("converting %s (%s) into %s", source, layout, folder)
        convert(importer, folder, layout=layout, split_ratio=split_ratio, seed=seed, limit=limit,
                workers=workers, progress=False)
    return split_paths(folder), {"name": layout, "source": source, "layout": layout, "folder": str(folder)}
