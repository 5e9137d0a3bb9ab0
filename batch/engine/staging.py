"""Shard staging for resampling: each ``--shard I/N`` stages its patch, the last one applies all.

Month files hold every symbol, so shards cannot write them. A shard writes its patch rows and
a plan (cuts, months, checkpoint marks) under
``processing_metadata/resample_staging/silver_{N}d/gen={G}/shard=I-of-N/``, G being the
checkpoint's generation when the round started; the plan is written last and marks the shard
done. When all N plans of a generation exist, their patches are applied together, which is
exactly what one unsharded run applies.
"""

from __future__ import annotations

from typing import Final

from batch.engine.checkpoint import SymbolMark
from batch.engine.fib import Anchor
from batch.engine.planning import ShardResult
from batch.engine.silver import Patch
from core import layout
from core.lake import Lake
from core.schemas import SILVER
from core.sharding import Shard

ROOT: Final = f"{layout.META}/resample_staging"


def _anchor(text: str) -> Anchor:
    if text == "symbol":
        return "symbol"
    if text == "calendar":
        return "calendar"
    msg = f"staged plan has an unknown anchor {text!r}"
    raise ValueError(msg)


def folder(interval: int, generation: int, shard: Shard) -> str:
    """Where one shard stages one interval."""
    return (
        f"{ROOT}/silver_{int(interval)}d/gen={int(generation)}/shard={shard.index}-of-{shard.count}"
    )


def stage(lake: Lake, interval: int, generation: int, result: ShardResult) -> None:
    """Write one shard's result (rows first, the plan last: the plan marks it complete)."""
    where = folder(interval, generation, result.shard)
    lake.write_table(f"{where}/rows.parquet", result.patch.rows)
    plan = {
        "shard": [result.shard.index, result.shard.count],
        "full": result.full,
        "anchor": result.anchor,
        "last_day": result.last_day,
        "cuts": result.patch.cuts,
        "upto": result.patch.upto,
        "months": sorted(result.patch.months),
        "replace": [[s.index, s.count] for s in result.patch.replace_shards],
        "marks": {s: m.to_json() for s, m in result.marks.items()},
        "removed": result.removed,
        "changed": result.changed,
    }
    lake.write_json(f"{where}/plan.json", plan)


def complete_set(
    lake: Lake, interval: int, generation: int, count: int
) -> list[ShardResult] | None:
    """All ``count`` staged results of a generation, or None while some are missing."""
    plans = []
    for i in range(count):
        plan = lake.read_json(f"{folder(interval, generation, Shard(i, count))}/plan.json")
        if plan is None:
            return None
        plans.append((i, plan))
    out = []
    for i, plan in plans:
        where = folder(interval, generation, Shard(i, count))
        patch = Patch(
            cuts={s: int(c) for s, c in plan["cuts"].items()},
            rows=lake.read_table(f"{where}/rows.parquet").cast(SILVER),
            months=set(plan["months"]),
            replace_shards=[Shard(a, b) for a, b in plan["replace"]],
            upto={s: int(c) for s, c in plan.get("upto", {}).items()},
        )
        out.append(
            ShardResult(
                shard=Shard(*plan["shard"]),
                full=bool(plan["full"]),
                anchor=_anchor(plan["anchor"]),
                last_day=plan["last_day"],
                patch=patch,
                marks={s: SymbolMark.from_json(m) for s, m in plan["marks"].items()},
                removed=list(plan["removed"]),
                changed=int(plan["changed"]),
            )
        )
    return out


def clear(lake: Lake, interval: int, below: int) -> None:
    """Remove staged results of generations before ``below`` (applied or abandoned)."""
    base = f"{ROOT}/silver_{int(interval)}d"
    for name in lake.list_dirs(base):
        if name.startswith("gen=") and int(name.removeprefix("gen=")) < below:
            lake.delete_prefix(f"{base}/{name}")
