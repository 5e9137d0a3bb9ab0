"""Fast JSON for columnar bars.

``json.dumps`` over 5,000 dicts costs about 14 ms; Arrow's C++ kernels cast each column to
strings and splice them with the literal JSON around them in about 3 ms, with no Python object
per row. Malformed (injected) rows are the rare exception and go through ``json`` one by one.
"""

from __future__ import annotations

import json
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflows.simulator.bars import POLYGON_KEYS, Bars

_DUMPS: Final = json.JSONEncoder(separators=(",", ":")).encode


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes."""
    return _DUMPS(obj).encode()


def _num(col: Any) -> pa.Array:
    return pc.cast(pa.array(col), pa.string())


def rows(bars: Bars, *, ticker_key: bool) -> bytes:
    """The bars as comma-separated JSON objects (no surrounding brackets)."""
    n = len(bars)
    if n == 0:
        return b""
    parts: list[Any] = []
    prefix = '{"T":"' if ticker_key else "{"
    if ticker_key:
        parts += [prefix, pa.array(bars.symbol, pa.string()), '","v":']
    else:
        parts += ['{"v":']
    parts.append(_num(bars.volume))
    for key, name in POLYGON_KEYS[1:]:
        parts += [f',"{key}":', _num(getattr(bars, name))]
    parts += [',"t":', _num(bars.t), ',"n":', _num(bars.transactions), "},"]
    joined = pc.binary_join_element_wise(*parts, "")
    offsets = np.frombuffer(
        joined.buffers()[1], dtype=np.int32, count=n + 1, offset=joined.offset * 4
    )
    raw: bytes = joined.buffers()[2].to_pybytes()
    if bars.defect is None or not np.any(bars.defect != ""):
        return raw[offsets[0] : offsets[-1] - 1]
    # splice the malformed rows, encoded one by one (NaN fields omitted)
    out: list[bytes] = []
    bad = np.flatnonzero(bars.defect != "").tolist()
    dicts = bars.take(bad).to_dicts(ticker_key=ticker_key)
    cursor = int(offsets[0])
    for row, obj in zip(bad, dicts, strict=True):
        out.append(raw[cursor : int(offsets[row])])
        out.append(dumps(obj) + b",")
        cursor = int(offsets[row + 1])
    out.append(raw[cursor : int(offsets[-1])])
    return b"".join(out)[:-1]
