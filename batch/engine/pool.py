"""Run a per-symbol function over many symbols: inline, or on a process pool, with progress.

Per-symbol work in this layer is a few milliseconds of Parquet I/O plus Python, so the pool
takes chunks of symbols per task (little IPC per symbol). Workers start with ``spawn`` (a
fresh interpreter: the S3 client's threads and connections do not survive a fork), or with
``fork`` where the caller allows it (a local lake on Linux), which spares each worker the
0.8 s of imports. Small inputs run inline, where a pool's start-up would cost more than it
saves.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from typing import Any, Final, TypeVar

from tqdm import tqdm

from batch.engine import forking

T = TypeVar("T")
R = TypeVar("R")

INLINE_BELOW: Final = 64
"""Fewer items than this run in the calling process."""


def tune_memory() -> None:
    """Allocators that suit these jobs' large, short-lived arrays; once per process.

    - numpy stops asking for transparent huge pages: with the kernel's THP defrag set to
      ``madvise`` (Debian's default) each fault on such an array may compact memory
      synchronously, which cost the full-market resample seconds of system time;
    - Arrow uses jemalloc (else the system allocator) instead of mimalloc, which here returned
      memory to the kernel eagerly and faulted it back in: twice the system time.

    ``ARROW_DEFAULT_MEMORY_POOL`` in the environment still wins.
    """
    import numpy as np
    import pyarrow as pa

    setter = getattr(getattr(np, "_core", np).multiarray, "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ or pa.default_memory_pool().backend_name != (
        "mimalloc"
    ):
        return
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.system_memory_pool())


def single_threaded_arrow() -> None:
    """In a pool worker: one Arrow CPU thread, as the pool already fills the cores."""
    import pyarrow as pa

    pa.set_cpu_count(1)
    tune_memory()


def worker_count(workers: int) -> int:
    """``workers``, or one per core when 0."""
    return workers if workers > 0 else (os.cpu_count() or 1)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _each(fn: Callable[[T], R], chunk: Sequence[T]) -> list[R]:
    return [fn(item) for item in chunk]


def map_items(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    progress: bool = False,
    desc: str = "",
    chunk: int = 32,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    fork: bool = False,
) -> list[R]:
    """``[fn(x) for x in items]`` in order; ``fn`` must be a module-level function.

    ``fn`` should catch the errors it can attribute to one item and return them, so one bad
    symbol does not stop the others; anything it raises stops the whole map.
    """
    return map_chunks(
        functools.partial(_each, fn),
        items,
        workers=workers,
        progress=progress,
        desc=desc,
        chunk=chunk,
        initializer=initializer,
        initargs=initargs,
        fork=fork,
    )


def map_chunks(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    *,
    workers: int,
    progress: bool = False,
    desc: str = "",
    chunk: int = 32,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    fork: bool = False,
) -> list[R]:
    """:func:`map_items` for a ``fn`` that takes a chunk of items and returns one result each.

    For work that is cheaper done once per chunk (e.g. checking many small tables at once).
    """
    n = worker_count(workers)
    bar = tqdm(total=len(items), desc=desc, unit="sym", disable=not progress, leave=False)
    try:
        if n == 1 or len(items) < INLINE_BELOW:
            if initializer is not None:
                initializer(*initargs)
            out = []
            for part in _chunks(items, chunk):
                out.extend(fn(part))
                bar.update(len(part))
            return out
        size = max(1, min(chunk, len(items) // (n * 4) or 1))
        results: dict[int, list[R]] = {}
        with forking.executor(n, fork=fork, initializer=initializer, initargs=initargs) as ex:
            futures = {ex.submit(fn, part): i for i, part in enumerate(_chunks(items, size))}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(len(results[futures[fut]]))
        return [r for i in sorted(results) for r in results[i]]
    finally:
        bar.close()
