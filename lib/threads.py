"""One torch thread for small CPU work (a prediction batch, a CHGNet step on a small cell).

On small graphs the other OpenMP threads mostly wait for work, and on a busy machine they spin
while waiting: a 2-atom prediction took 2 s of CPU on two threads and 0.05 s on one.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["single_thread_if"]


@contextmanager
def single_thread_if(small: bool) -> Iterator[None]:
    """Run the block on one torch thread when ``small`` (the previous count is restored afterwards)."""
    before = torch.get_num_threads()
    if not small or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
