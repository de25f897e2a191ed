"""Map a function over items on a few threads (columns of a batch)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def parallel_map(function: Callable[[_T], _R], items: Iterable[_T], *, parallel: bool = True) -> list[_R]:
    """Map over columns on a few threads: numpy releases the GIL in the
    partitions, comparisons and sorts that dominate, so columns overlap.
    Small batches run in the caller's thread (`parallel=False`): starting
    threads costs more than their columns take."""
    items = list(items)
    workers = min(len(items), os.cpu_count() or 1, 8) if parallel else 1
    if workers <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crisis-columns") as pool:
        return list(pool.map(function, items))
