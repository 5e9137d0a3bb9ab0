"""Work on forked processes that inherit this process's memory (Linux, local lakes).

Why: the full resample is many short Arrow calls per month file and interval. On threads they
contend for the GIL and wake each other through the kernel's futexes, which cost a third of the
CPU on 2 cores. Forked workers see the parent's loaded rows without copying them, and arrays
from :func:`shared_array` also carry the workers' writes back to the parent.

Only for local lakes: the S3 client's threads and connections do not survive a fork. The
children run pure Python, numpy and Parquet decoding on in-memory buffers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import mmap
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")
R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
_INHERITED: tuple[Callable[[Any], Any], Sequence[Any]] | None = None


def available() -> bool:
    """True where :func:`map_forked` can run (Linux's fork)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def shared_array(length: int, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A zeroed array in anonymous shared memory: forked children's writes reach the parent."""
    size = max(1, length * np.dtype(dtype).itemsize)
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buffer, dtype=dtype, count=length)


def map_forked(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    on_done: Callable[[R], None] | None = None,
    after_fork: Callable[[], None] | None = None,
) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` forked processes, in order.

    ``fn`` and ``items`` reach the children by inheritance, not pickling (closures are fine);
    results are pickled back. An exception in ``fn`` is raised here. ``after_fork`` runs here
    once every worker exists (so it may start threads without a fork copying them mid-way).
    """
    global _INHERITED
    if _INHERITED is not None:
        msg = "map_forked does not nest"
        raise RuntimeError(msg)
    _INHERITED = (fn, items)
    try:
        with executor(max(1, min(workers, len(items))), fork=True) as ex:
            futures = [ex.submit(_call, i) for i in range(len(items))]
            if after_fork is not None:  # a fork context starts every worker at the first submit
                after_fork()
            out = []
            for fut in futures:
                result: R = fut.result()
                out.append(result)
                if on_done is not None:
                    on_done(result)
            return out
    finally:
        _INHERITED = None


@contextlib.contextmanager
def executor(
    workers: int,
    *,
    fork: bool,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers die with this process, forked where ``fork`` allows.

    Forked workers run while this process's heap is frozen (:func:`frozen_heap`); otherwise
    they are spawned (a fresh interpreter, as an S3 lake needs).
    """
    forked = fork and available()
    ctx = multiprocessing.get_context("fork" if forked else "spawn")
    with (
        frozen_heap() if forked else contextlib.nullcontext(),
        ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(os.getpid(), initializer, initargs),
        ) as ex,
    ):
        yield ex


def _start_worker(
    parent: int, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]
) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the parent's objects out of forked children's garbage collections.

    A collection in a child writes to the header of every object it walks, so each inherited
    page it touches is copied: after a full resample the parent holds gigabytes.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def die_with_parent(parent: int) -> None:
    """A SIGKILLed parent takes its workers along, so none writes after a crash and rerun.

    ``parent`` is the parent's pid, taken before the workers started: a parent that died before
    the request leaves the worker re-parented, and it exits. (Comparing with 1 would be wrong:
    a job may itself be PID 1 in a container, and orphans may go to a subreaper.)
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - not Linux's libc
        return
    if os.getppid() != parent:
        os._exit(1)


def _call(index: int) -> Any:
    if _INHERITED is None:  # pragma: no cover - only a child forked by map_forked runs this
        msg = "no inherited work: _call runs only in a map_forked child"
        raise RuntimeError(msg)
    fn, items = _INHERITED
    return fn(items[index])
