"""A new split applied the daily run's way (resample, then gold) equals a full rebuild.

The split symbol sits between others in every month file, so its new bars are spliced in
between theirs; silver and gold are compared byte for byte with a lake built from scratch.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from batch import consolidate, gold, resample
from core import adjustments as adj
from core.lake import Lake
from tests.batch_support import snapshot, window, write_fragment
from tests.unit.test_gold import _rows
from tests.unit.test_resample_splits import _write_splits

pytestmark = pytest.mark.unit

DAYS = window(dt.date(2023, 1, 3), 320)
OLD = (("AAA", DAYS[40], 1.0, 3.0),)
NEW = (*OLD, ("BBB", DAYS[200], 1.0, 2.0))


def _market(lake: Lake) -> None:
    write_fragment(lake, _rows("AAA", DAYS, 90.0))
    write_fragment(lake, _rows("BBB", DAYS, 40.0))
    write_fragment(lake, _rows("CCC", DAYS[30:], 7.0))
    write_fragment(lake, _rows("DDD", DAYS[:250], 12.0))


def _daily_run(lake: Lake) -> tuple[resample.ResampleReport, gold.GoldReport]:
    """Resample, then gold, with the workers the pipeline gives them."""
    silver = resample.run(lake, workers=1)
    golden = gold.run(lake, workers=2)
    assert silver.ok and golden.ok, (silver.failed, golden.failed)
    return silver, golden


def test_a_new_split_applied_incrementally_equals_a_full_rebuild(tmp_path: Path) -> None:
    lake = Lake((tmp_path / "lake").as_uri())
    _market(lake)
    _write_splits(lake, OLD)
    assert consolidate.run(lake, workers=1).ok
    _daily_run(lake)
    before = {p: snapshot(lake, p) for p in ("silver", "gold")}

    _write_splits(lake, NEW)  # BBB's split arrives
    silver, golden = _daily_run(lake)
    assert {r.symbols_changed for r in silver.per_interval} == {1}
    assert {r.symbols_changed for r in golden.per_interval} == {1}
    assert adj.read_recorded(lake)["BBB"][0] == adj.split_book(lake).version("BBB")

    full = Lake((tmp_path / "full").as_uri())
    _market(full)
    _write_splits(full, NEW)
    assert consolidate.run(full, workers=1).ok
    assert resample.run(full, workers=1, full=True).ok
    assert gold.run(full, workers=1, full=True).ok
    for prefix in ("silver", "gold"):
        after = snapshot(lake, prefix)
        assert after == snapshot(full, prefix), prefix
        assert after != before[prefix], f"{prefix} did not change"
