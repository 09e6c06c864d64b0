"""The run folder: what a training run writes there, and the refusal to overwrite one by accident."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from e3relax.errors import InputError

__all__ = ["RUN_OUTPUTS", "prepare_run_dir"]

log = logging.getLogger(__name__)

#: what a run writes into its folder (``--overwrite`` removes exactly these)
RUN_OUTPUTS = ("config.yaml", "checkpoints", "tb")


def prepare_run_dir(run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Refuse to start a new run in a folder that holds one, unless ``overwrite`` (which removes it).

    Raises:
        InputError: naming the folder and the two ways on (``--resume``, ``--overwrite``).
    """
    run_dir = Path(run_dir)
    if resume:
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"run folder {run_dir} is a file")
    found = [name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if found and not overwrite:
        raise InputError(f"run folder {run_dir} already holds a run ({', '.join(found)}); continue it with "
                         f"--resume {run_dir}, choose another --run-dir, or pass --overwrite to replace it")
    for name in found:
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        log.info("--overwrite: removed %s", path)
    return run_dir
