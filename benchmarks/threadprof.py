"""cProfile over every thread of a run: the worker and the sinks' writer threads.

cProfile sees only the thread that enables it, and the live flow's Redis writes run on
threads of their own (:mod:`dataflows.connectors.background`), so a profile of the worker
alone misses them. :class:`ThreadProfiles` gives each thread started while it is on a
profiler of its own (through ``threading.setprofile``) and merges them with the caller's.
Times are each thread's CPU time (waits cost nothing), or with ``wall`` the wall clock (where
a thread waits).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any


class ThreadProfiles:
    """``with ThreadProfiles() as p: ...``, then :meth:`dump` or :meth:`report`."""

    def __init__(self, *, wall: bool = False) -> None:
        self.timer = time.perf_counter if wall else time.thread_time
        self.main = cProfile.Profile(self.timer)
        self.others: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_thread(self, frame: FrameType, event: str, arg: Any) -> None:
        # called once in each new thread: swap this hook for a profiler of the thread's own
        prof = cProfile.Profile(self.timer)
        with self._lock:
            self.others.append(prof)
        sys.setprofile(None)
        prof.enable()

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start_thread)
        self.main.enable()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.main.disable()
        threading.setprofile(None)

    def stats(self) -> pstats.Stats:
        """The merged statistics of every thread (threads still running included)."""
        out = io.StringIO()
        merged = pstats.Stats(self.main, stream=out)
        for prof in self.others:
            prof.create_stats()
            if getattr(prof, "stats", None):
                merged.add(prof)
        return merged

    def dump(self, path: Path) -> None:
        """Write the merged statistics (``python -m pstats PATH`` reads them)."""
        self.stats().dump_stats(str(path))

    def report(self, top: int = 40) -> str:
        """The ``top`` functions by their own time, then by cumulative time."""
        out = io.StringIO()
        stats = self.stats()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()
