"""batch.vacuum and the consolidator's cleanup: delete a fragment only when it is safe.

"Verified" means, row by row: data.parquet has a row for the fragment row's (symbol, date), and
that row is the fragment row or wins against it under the contract's precedence (newer
``ingested_at``, except that ``live`` never replaces ``rest``). A fragment row that lost to a
newer fragment is therefore accounted for; a fragment row newer than what data.parquet holds,
or a ``rest`` row that data.parquet holds as ``live``, is not, and its file stays.
"""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest

from batch import consolidate, vacuum
from batch.engine import cleanup
from core import calendar, layout
from core.lake import Lake
from tests.batch_support import Row, sessions, simple_rows, table_of, write_fragment

pytestmark = pytest.mark.unit

T = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
"""Retention counts from the fragments' modification times, which are real: run "now"."""
LATER = T + dt.timedelta(days=30)


def _window(first: dt.date, count: int) -> list[dt.date]:
    i = calendar.session_index(first)
    return sessions()[i : i + count]


def _merge(lake: Lake) -> None:
    assert consolidate.run(lake, workers=1, cleanup=False, now=T).ok


def _fragments(lake: Lake) -> set[str]:
    return {e.key for e in lake.list(layout.DAILY) if layout.parse_fragment(e.key)}


def test_verified_means_present_and_at_least_as_new() -> None:
    d = dt.date(2024, 3, 4)
    held = Row("AAA", d, 30, 32, 29, 31, 300, "rest", 9)

    def verified(data: Row, fragment: Row) -> bool:
        return cleanup.all_rows_present(table_of([data]), table_of([fragment]))

    assert verified(held, held)  # the very row
    assert verified(held, Row("AAA", d, 10, 12, 9, 11, 100, "rest", 1))  # lost to a newer row
    assert verified(held, Row("AAA", d, 10, 12, 9, 11, 100, "live", 20))  # live never wins
    assert verified(held, Row("AAA", d, 10, 12, 9, 11, 100, "export", 2))
    assert not verified(held, Row("AAA", d, 10, 12, 9, 11, 100, "rest", 10))  # newer: not in
    assert not verified(held, Row("AAA", d, 10, 12, 9, 11, 100, "export", 10))
    live = Row("AAA", d, 30, 32, 29, 31, 300, "live", 9)
    assert not verified(live, Row("AAA", d, 10, 12, 9, 11, 100, "rest", 1))  # rest lost: keep
    other_day = Row("AAA", calendar.next_session(d), 30, 32, 29, 31, 300, "rest", 9)
    assert not verified(other_day, held)  # the date is missing
    # equal ingested_at: the deterministic tie-break decides, as the merge would
    tie_low = Row("AAA", d, 10, 12, 9, 11, 100, "rest", 9)
    assert verified(held, tie_low) and not verified(tie_low, held)
    assert cleanup.all_rows_present(table_of([held]), table_of([]))
    assert not cleanup.all_rows_present(table_of([]), table_of([held]))


def test_a_fragment_goes_only_when_merged_verified_and_older_than_the_retention(
    local_lake: Lake,
) -> None:
    days = _window(dt.date(2024, 4, 1), 12)
    first = write_fragment(local_lake, simple_rows("AAA", days[:6]))
    lost = write_fragment(local_lake, [Row("AAA", days[6], 1, 2, 1, 1, 1, "rest", 1)])
    newer = simple_rows("AAA", days[6:8], base=50, ingested=5)  # beats `lost` on days[6]
    winner = write_fragment(local_lake, newer)
    tampered = write_fragment(local_lake, simple_rows("BBB", days[:4]))
    _merge(local_lake)
    # data.parquet of BBB replaced behind the consolidator's back by older rows: the fragment
    # would win against them, so its rows are not accounted for
    edited = table_of(simple_rows("BBB", days[:4], ingested=-100))
    local_lake.write_table(layout.consolidated("BBB"), edited)
    unmerged = write_fragment(local_lake, simple_rows("CCC", days[:2]))  # after the merge

    young = vacuum.run(local_lake, workers=1, now=T + dt.timedelta(days=1), retention_days=7)
    assert (
        young.ok
        and young.fragments == 0
        and _fragments(local_lake) == {first, lost, winner, tampered, unmerged}
    )
    report = vacuum.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert report.ok
    assert {k for k, _ in report.removed} == {first, lost, winner}
    assert report.kept_unverified == 1 and report.kept_unmerged == 1
    assert _fragments(local_lake) == {tampered, unmerged}
    assert report.bytes == sum(size for _, size in report.removed) > 0
    log = cleanup.read_manifest(local_lake).to_pylist()
    assert {r["key"] for r in log} == {first, lost, winner}
    by_key = {r["key"]: r for r in log}
    assert by_key[first]["rows"] == 6 and by_key[first]["first_date"] == days[0]
    assert by_key[first]["last_date"] == days[5] and by_key[first]["removed_by"] == "vacuum"
    assert by_key[lost]["removed_at"] == LATER
    again = vacuum.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert again.fragments == 0 and len(cleanup.read_manifest(local_lake)) == 3


def test_a_backfilled_fragment_is_kept_until_it_is_merged(local_lake: Lake) -> None:
    days = _window(dt.date(2023, 9, 1), 20)
    write_fragment(local_lake, simple_rows("AAA", days[5:]))
    _merge(local_lake)
    old = write_fragment(local_lake, simple_rows("AAA", days[:2]))  # a backfill of old dates
    report = vacuum.run(local_lake, workers=1, now=LATER, retention_days=0)
    assert old in _fragments(local_lake) and report.kept_unmerged == 1
    _merge(local_lake)
    vacuum.run(local_lake, workers=1, now=LATER, retention_days=0)
    assert not _fragments(local_lake)
    t = pq.read_table(local_lake.path(layout.consolidated("AAA")))
    assert t["date"].to_pylist() == days[:2] + days[5:]


def test_a_fragment_rewritten_after_its_merge_is_kept(local_lake: Lake) -> None:
    days = _window(dt.date(2023, 9, 1), 5)
    key = write_fragment(local_lake, simple_rows("AAA", days))
    _merge(local_lake)
    write_fragment(local_lake, simple_rows("AAA", days, base=70, ingested=3), key)
    report = vacuum.run(local_lake, workers=1, now=LATER, retention_days=0)
    assert report.fragments == 0 and report.kept_unmerged == 1
    _merge(local_lake)  # merged again (the manifest knows it by size and mtime)
    assert vacuum.run(local_lake, workers=1, now=LATER, retention_days=0).fragments == 1
    t = pq.read_table(local_lake.path(layout.consolidated("AAA")))
    assert t["open"].to_pylist()[0] == 70


def test_dry_run_lists_files_and_bytes_and_deletes_nothing(
    local_lake: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    days = _window(dt.date(2024, 1, 2), 6)
    keys = [write_fragment(local_lake, [r]) for r in simple_rows("AAA", days)]
    _merge(local_lake)
    code = vacuum.main(["--lake", local_lake.url, "--dry-run", "--retention-days", "0"])
    assert code == 0
    out = capsys.readouterr().out
    for e in local_lake.list(layout.DAILY):
        if e.key in keys:
            assert f"{e.size:>12}  {e.key}" in out
    total = sum(e.size for e in local_lake.list(layout.DAILY) if e.key in keys)
    assert f"would remove 6 fragments ({total} bytes)" in out
    assert _fragments(local_lake) == set(keys)
    assert not local_lake.exists(cleanup.MANIFEST_KEY)
    assert vacuum.main(["--lake", local_lake.url, "--retention-days", "0"]) == 0
    assert not _fragments(local_lake) and len(cleanup.read_manifest(local_lake)) == 6
    with pytest.raises(SystemExit) as exc:
        vacuum.main(["--help"])
    assert exc.value.code == 0 and "--retention-days" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        vacuum.main(["--lake", local_lake.url, "--retention-days", "-1"])


def test_the_consolidators_own_cleanup_keeps_recent_and_records_removals(
    local_lake: Lake,
) -> None:
    days = _window(dt.date(2024, 1, 2), 8)
    keys = [write_fragment(local_lake, [r]) for r in simple_rows("AAA", days)]
    report = consolidate.run(local_lake, workers=1, now=T, retention_days=7)
    assert report.ok and report.fragments_deleted == 0 and _fragments(local_lake) == set(keys)
    report = consolidate.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert report.fragments_deleted == 8 and not _fragments(local_lake)
    log = cleanup.read_manifest(local_lake)
    assert set(log["removed_by"].to_pylist()) == {"consolidate"}
    assert sorted(log["key"].to_pylist()) == sorted(keys)
    t = pq.read_table(local_lake.path(layout.consolidated("AAA")))
    assert t["date"].to_pylist() == days  # nothing lost with the fragments


def test_a_fragment_with_refused_rows_goes_once_they_are_in_the_quarantine(
    local_lake: Lake,
) -> None:
    days = _window(dt.date(2024, 4, 1), 4)
    good = simple_rows("AAA", days)
    bad = Row("AAA", days[3], 1, 0.5, 1, 1, 1)  # high below low: refused
    mixed = write_fragment(local_lake, [*good[:3], bad])
    # a folder whose name is no ticker: consolidation refuses its rows, so it never gets a
    # data.parquet, and vacuum must not fail on it
    odd = f"{layout.DAILY}/symbol=bad name/date={days[0].isoformat()}.parquet"
    local_lake.write_table(odd, table_of([Row("bad name", days[0], 1, 2, 1, 1, 1)]))
    _merge(local_lake)
    assert len(list(local_lake.list("quarantine"))) == 2
    report = vacuum.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert report.ok, report.failed
    assert {k for k, _ in report.removed} == {mixed, odd}
    for e in local_lake.list("quarantine"):  # a quarantine file gone would keep its fragment
        local_lake.delete(e.key)
    kept = write_fragment(local_lake, [Row("AAA", days[0], 1, 0.5, 1, 1, 1, "rest", 9)])
    _merge(local_lake)
    local_lake.delete(next(e.key for e in local_lake.list("quarantine")))
    again = vacuum.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert again.ok and again.fragments == 0 and again.kept_unverified == 1
    assert kept in _fragments(local_lake)
    # the consolidator's own cleanup decides the same way
    own = consolidate.run(local_lake, workers=1, now=LATER, retention_days=7)
    assert own.ok and own.fragments_deleted == 0
