"""Local counting between trips to Redis: when a request may be counted here, and what is owed."""

from __future__ import annotations

import pytest

from api.ratecounts import LOCAL_MIN, SYNC_EVERY, SYNC_S, LocalCounts

pytestmark = pytest.mark.unit


def test_small_limits_and_unsynced_windows_always_ask_redis() -> None:
    counts = LocalCounts()
    w = counts.window("k", 7)
    assert LocalCounts.count_here(w, 1000, 0.0) is None  # nothing known yet
    LocalCounts.synced(w, 1, 0.0)
    assert LocalCounts.count_here(w, LOCAL_MIN - 1, 0.0) is None


def test_far_from_the_limit_requests_are_counted_here_in_batches() -> None:
    counts = LocalCounts()
    w = counts.window("k", 7)
    assert LocalCounts.take_pending(w) == 1
    LocalCounts.synced(w, 10, 100.0)
    got = [LocalCounts.count_here(w, 1000, 100.0) for _ in range(SYNC_EVERY)]
    assert got == list(range(11, 11 + SYNC_EVERY))
    assert LocalCounts.count_here(w, 1000, 100.0) is None  # a batch is due
    assert LocalCounts.take_pending(w) == SYNC_EVERY + 1 and w.pending == 0
    LocalCounts.synced(w, 200, 100.1)
    assert LocalCounts.count_here(w, 1000, 100.1 + SYNC_S + 0.01) is None  # too long ago


def test_near_the_limit_every_request_asks_redis() -> None:
    w = LocalCounts().window("k", 7)
    LocalCounts.synced(w, 899, 0.0)
    assert LocalCounts.count_here(w, 1000, 0.0) == 900
    assert LocalCounts.count_here(w, 1000, 0.0) is None  # 901 is within a tenth of 1000


def test_a_failed_trip_keeps_what_was_owed_and_a_new_window_starts_at_zero() -> None:
    counts = LocalCounts()
    w = counts.window("k", 7)
    LocalCounts.failed(w, LocalCounts.take_pending(w))
    assert w.pending == 1
    fresh = counts.window("k", 8)
    assert fresh is not w and (fresh.synced, fresh.pending) == (0, 0)
