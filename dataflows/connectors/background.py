"""One ordered writer thread per sink partition, so the Bytewax worker never waits on I/O.

A live sink hands each batch's write to :class:`OrderedWriter` and returns: the worker folds
the next trades while the server (Redis) executes the last write. Writes run one at a time in
the order given, so a later document never lands before an earlier one. A failed write is
raised on the worker at its next call (the flow stops rather than lose data); at most
``queued`` writes wait, beyond that the worker waits for the oldest. :meth:`drain` waits for
everything queued, for writes that must be done before the sink returns (a final bar must be
in Redis before the epoch that produced it can be committed by recovery).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final, TypeVar

T = TypeVar("T")
QUEUED: Final = 8


class OrderedWriter:
    """Run writes in order on a thread of their own."""

    def __init__(self, name: str, *, queued: int = QUEUED) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: list[Future[None]] = []
        self._queued = queued

    def submit(self, write: Callable[[T], None], arg: T) -> None:
        """Queue ``write(arg)``; raises the error of an earlier failed write."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._queued):
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(write, arg))

    def drain(self) -> None:
        """Wait for every queued write; raises the first that failed."""
        while self._pending:
            self._pending.pop(0).result()

    def close(self) -> None:
        """Drain, then stop the thread (also when a write failed)."""
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)
