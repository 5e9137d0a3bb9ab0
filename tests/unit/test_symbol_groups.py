"""One symbol's rows through row-group statistics and cached footers, against a plain filter."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from batch.engine.minutes import row_groups
from core import symbol_groups
from core.symbol_groups import FooterCache, read_symbol, read_symbol_many

pytestmark = pytest.mark.unit

FS = pafs.LocalFileSystem()


def market(counts: dict[str, int]) -> pa.Table:
    symbols = [s for s in sorted(counts) for _ in range(counts[s])]
    return pa.table(
        {
            "symbol": pa.array(symbols, pa.string()),
            "start": pa.array(range(len(symbols)), pa.int64()),
            "close": pa.array([float(i) / 3 for i in range(len(symbols))]),
        }
    )


def info(path: Path) -> pafs.FileInfo:
    return FS.get_file_info(str(path))


def plain(table: pa.Table, symbol: str) -> pa.Table:
    return table.filter(pc.equal(table["symbol"], symbol))


COUNTS = {"A": 5, "AA": 1, "B": 40, "BRK.B": 3, "C": 17, "ZZZZ": 9}


def test_groups_end_at_symbol_boundaries_and_hold_every_row() -> None:
    t = market(COUNTS)
    sizes = row_groups(t["symbol"], target=10)
    assert sum(sizes) == t.num_rows
    edges, at = set(), 0
    for n in sizes:
        edges.add(at)
        at += n
    starts, at = set(), 0
    for s in sorted(COUNTS):
        starts.add(at)
        at += COUNTS[s]
    assert edges <= starts  # no symbol is cut in two
    assert row_groups(market({})["symbol"]) == []
    assert row_groups(market({"X": 50})["symbol"], target=10) == [50]


@pytest.mark.parametrize("layout", ["symbol groups", "fixed groups of 7", "no statistics"])
def test_one_symbol_equals_a_filter_whatever_the_file(tmp_path: Path, layout: str) -> None:
    t = market(COUNTS)
    path = tmp_path / "s.parquet"
    if layout == "symbol groups":
        with pq.ParquetWriter(path, t.schema) as w:
            at = 0
            for n in row_groups(t["symbol"], target=10):
                w.write_table(t.slice(at, n))
                at += n
    elif layout == "fixed groups of 7":  # a symbol spans several groups
        pq.write_table(t, path, row_group_size=7)
    else:
        pq.write_table(t, path, row_group_size=7, write_statistics=False)
    cache = FooterCache()
    for symbol in [*COUNTS, "AAA", "0", "zzz"]:
        got = read_symbol(FS, info(path), symbol, cache=cache)
        assert got.equals(plain(t, symbol)), symbol
        cols = read_symbol(FS, info(path), symbol, ["close"], cache=cache)
        assert cols.column_names == ["close"] and cols.num_rows == COUNTS.get(symbol, 0)


def test_a_rewritten_file_is_never_read_through_its_old_footer(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    cache = FooterCache()
    pq.write_table(market(COUNTS), path, row_group_size=4)
    assert read_symbol(FS, info(path), "C", cache=cache).num_rows == 17
    changed = market({**COUNTS, "C": 30, "A": 1})
    pq.write_table(changed, path, row_group_size=11)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert read_symbol(FS, info(path), "C", cache=cache).equals(plain(changed, "C"))


def test_many_files_come_back_in_their_order(tmp_path: Path) -> None:
    infos, want = [], []
    for k in range(6):
        t = market({"A": k + 1, "B": 2 * k + 1})
        pq.write_table(t, tmp_path / f"{k}.parquet")
        infos.append(info(tmp_path / f"{k}.parquet"))
        want.append(plain(t, "B"))
    got = read_symbol_many(FS, infos, "B", cache=FooterCache())
    assert [g.num_rows for g in got] == [w.num_rows for w in want]
    assert all(g.equals(w) for g, w in zip(got, want, strict=True))
    assert symbol_groups.READ_THREADS >= 1
