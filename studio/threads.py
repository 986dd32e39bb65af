"""How many CPU threads PyTorch may use in training and chat: one knob, ``FTS_TORCH_THREADS``.

On a CPU shared with other busy processes, OpenMP threads that spin-wait for each other can make a
step 5-10x slower than one thread would (measured on the 2-core dev machines: one thread 6x faster
than two for generation); on a machine of its own PyTorch's default (all cores) is right.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

THREADS_ENV = "FTS_TORCH_THREADS"


def configured_threads() -> int | None:
    value = os.environ.get(THREADS_ENV)
    return max(1, int(value)) if value else None


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Cap PyTorch's intra-op threads to ``n`` inside the block (no cap for None)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
