"""Contract check: the batch entry points' flags, usage errors, and N shards == one run.

Each job's ``main`` is called as ``python -m`` would: ``--help`` exits 0 and names the flags the
contract lists for it, a malformed ``--shard`` or an unknown flag is a usage error (exit 2), and
``--dry-run`` writes nothing. Then three shards of consolidate, resample and gold, on a lake with
splits, write the same bronze, silver and gold bytes as one run of each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch import consolidate, export, gaps, gold, intraday, pipeline, resample, retention, vacuum
from core import layout
from core.lake import Lake
from core.schemas import BRONZE_DAILY, SPLITS
from dataflows import corporate_actions
from tests import contract_oracle as oracle

pytestmark = pytest.mark.unit
Main = Callable[[Sequence[str] | None], int]
ALL = ("--lake", "--symbols", "--dry-run", "--shard")
JOBS: dict[str, tuple[Main, tuple[str, ...]]] = {
    "batch.consolidate": (consolidate.main, ALL),
    "batch.resample": (resample.main, (*ALL, "--intervals")),
    "batch.vacuum": (vacuum.main, ALL),
    "batch.retention": (retention.main, ALL),
    "batch.export": (export.main, ALL),
    "batch.gaps": (gaps.main, ALL),
    "batch.gold": (gold.main, (*ALL, "--intervals")),
    "batch.intraday": (intraday.main, ("--lake", "--intervals", "--dry-run", "--shard")),
    "batch.pipeline": (pipeline.main, ("--lake", "--dry-run")),
    "dataflows.corporate_actions": (corporate_actions.main, ("--lake", "--symbols")),
}


@pytest.mark.parametrize("name", list(JOBS))
def test_help_names_the_contract_flags(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    main, flags = JOBS[name]
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage" in text.lower()
    for flag in flags:
        assert flag in text, (name, flag)


@pytest.mark.parametrize("name", [n for n, (_, f) in JOBS.items() if "--shard" in f])
@pytest.mark.parametrize("bad", [["--shard", "3/3"], ["--shard", "x"], ["--no-such-flag"]])
def test_usage_errors_exit_2(name: str, bad: list[str], tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    with pytest.raises(SystemExit) as exit_:
        JOBS[name][0](["--lake", lake.as_uri(), *bad])
    assert exit_.value.code == 2


NOW = dt.datetime(2025, 1, 2, tzinfo=dt.UTC)
DAYS = oracle.sessions_from(dt.date(2024, 6, 3), 45)
SYMBOLS = [f"S{i:02d}" for i in range(12)]


def _seed(lake: Lake) -> None:
    rng = np.random.default_rng(5)
    for i, sym in enumerate(SYMBOLS):
        days = DAYS[i % 4 :]
        close = 20 + np.cumsum(rng.standard_normal(len(days)))
        df = pd.DataFrame(
            {"symbol": sym, "date": days, "open": close, "high": close + 1, "low": close - 1,
             "close": close, "volume": 100.0, "vwap": close, "transactions": 1,
             "source": "rest", "ingested_at": NOW}
        )  # fmt: skip
        table = pa.Table.from_pandas(df, schema=BRONZE_DAILY, preserve_index=False)
        lake.write_table(layout.range_fragment(sym, days[0], days[-1]), table)
    splits = [
        {"symbol": sym, "execution_date": DAYS[20 + k], "split_from": 1.0, "split_to": 2.0 + k,
         "adjustment_type": "forward_split", "vendor_factor": None, "id": None,
         "ingested_at": NOW}
        for k, sym in enumerate(SYMBOLS[::3])
    ]  # fmt: skip
    lake.write_table(layout.reference_splits(), pa.Table.from_pylist(splits, schema=SPLITS))


def _bytes(root: Path) -> dict[str, str]:
    """Digests of silver and gold files, and of the rows of consolidated bronze.

    A data.parquet's footer records when it was merged, and adjustments.parquet when each
    version was applied, so their rows (without those times) are compared, not their bytes.
    """
    out = {}
    for p in sorted(root.rglob("*.parquet")):
        key = str(p.relative_to(root))
        if key.startswith(("silver/", "gold/")):
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.name in ("data.parquet", "adjustments.parquet"):
            table = pq.read_table(p).replace_schema_metadata(None)
            rows = table.drop_columns([c for c in ["applied_at"] if c in table.column_names])
            out[key] = hashlib.sha256(repr(rows.to_pylist()).encode()).hexdigest()
    return out


def test_dry_run_writes_nothing_and_shards_equal_one_run(tmp_path: Path) -> None:
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    _seed(Lake(one.as_uri()))
    before = {p: p.read_bytes() for p in one.rglob("*") if p.is_file()}
    for main in (consolidate.main, resample.main, gold.main):
        assert main(["--lake", one.as_uri(), "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in one.rglob("*") if p.is_file()} == before
    shutil.copytree(one, sharded)

    for main in (consolidate.main, resample.main, gold.main):
        assert main(["--lake", one.as_uri()]) == 0
        for i in range(3):
            assert main(["--lake", sharded.as_uri(), "--shard", f"{i}/3"]) == 0
    got, want = _bytes(sharded), _bytes(one)
    assert any(k.startswith("gold/") for k in want) and any(k.startswith("silver/") for k in want)
    assert got == want

    # the next session, incrementally: shards still add up to one run
    nxt = oracle.sessions_from(DAYS[-1], 2)[1]
    for root in (one, sharded):
        lake = Lake(root.as_uri())
        for i, sym in enumerate(SYMBOLS):
            row = {"symbol": sym, "date": nxt, "open": 20.0 + i, "high": 21.0 + i,
                   "low": 19.0 + i, "close": 20.5 + i, "volume": 50.0, "vwap": 20.0 + i,
                   "transactions": 1, "source": "rest", "ingested_at": NOW}  # fmt: skip
            lake.write_table(
                layout.daily_fragment(sym, nxt), pa.Table.from_pylist([row], schema=BRONZE_DAILY)
            )
    for main in (consolidate.main, resample.main, gold.main):
        assert main(["--lake", one.as_uri()]) == 0
        for i in (2, 0, 1):
            assert main(["--lake", sharded.as_uri(), "--shard", f"{i}/3"]) == 0
    assert _bytes(sharded) == _bytes(one)
