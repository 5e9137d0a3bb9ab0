"""Arrow to numpy without pandas.

Every Arrow-to-numpy conversion of pyarrow (``to_numpy``, ``__array__``) first imports pandas,
and ``Table.to_pylist`` does for zoned timestamps: about 1.3 s of CPU in each fresh process
(every CLI run and every pool worker), for jobs that never use pandas. Numbers without nulls
are read straight from the Arrow buffer instead (zero-copy and read-only, as ``to_numpy``
gives them); anything else falls back to ``to_numpy``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc


def _numeric_dtype(t: pa.DataType) -> np.dtype[Any] | None:
    if pa.types.is_integer(t):
        kind = "i" if pa.types.is_signed_integer(t) else "u"
    elif pa.types.is_floating(t) and t.bit_width in (32, 64):
        kind = "f"
    else:
        return None
    return np.dtype(f"<{kind}{t.bit_width // 8}")


def to_numpy(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[Any]:
    """``values.to_numpy(zero_copy_only=False)``, without loading pandas where it can."""
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 1:
            values = values.chunk(0)
        elif values.num_chunks == 0:
            values = pa.nulls(0, values.type)
        else:
            values = values.combine_chunks()
    arr: pa.Array = values
    n = len(arr)
    dtype = _numeric_dtype(arr.type)
    if n == 0 and (dtype is not None or pa.types.is_boolean(arr.type)):
        return np.zeros(0, dtype=dtype or np.bool_)
    if dtype is not None:
        if arr.null_count and pa.types.is_floating(arr.type):
            arr = pc.fill_null(arr, np.nan)
        if not arr.null_count:
            return np.frombuffer(
                arr.buffers()[1], dtype=dtype, count=n, offset=arr.offset * dtype.itemsize
            )
    elif pa.types.is_boolean(arr.type) and not arr.null_count:
        bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[arr.offset : arr.offset + n].astype(bool)
    elif (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) and n < 1 << 16:
        out = np.empty(n, dtype=object)
        out[:] = arr.to_pylist()
        return out
    return arr.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def date_days(table: pa.Table, column: str = "date") -> npt.NDArray[np.int32]:
    """A date32 column as int32 day numbers."""
    return np.asarray(to_numpy(pc.cast(table[column], pa.int32())), dtype=np.int32)


def from_numpy(values: npt.NDArray[Any], type: pa.DataType | None = None) -> pa.Array:
    """``pa.array(values, type)`` for a numeric or bool numpy array, without loading pandas.

    ``type`` may be any fixed-width type of the same item size (date32 for int32 days).
    """
    if values.dtype == np.bool_:
        bits = np.packbits(np.ascontiguousarray(values, dtype=np.uint8), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    data = np.ascontiguousarray(values)
    target = type if type is not None else pa.from_numpy_dtype(data.dtype)
    if target.bit_width != data.dtype.itemsize * 8:
        msg = f"cannot view {data.dtype} as {target}"
        raise TypeError(msg)
    return pa.Array.from_buffers(target, len(data), [None, pa.py_buffer(data)])


def strings(values: list[str]) -> pa.Array:
    """``pa.array(values, pa.string())`` without loading pandas."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def index_in(
    values: pa.Array | pa.ChunkedArray, names: list[str], missing: int = -1
) -> npt.NDArray[np.int64]:
    """Position of each string among ``names``, ``missing`` where absent (``pc.index_in``).

    The fill is an Arrow scalar made from a buffer: ``pa.scalar`` of a Python value, as
    ``pc.fill_null`` makes one, loads pandas.
    """
    idx = pc.index_in(values, value_set=strings(names))
    fill = from_numpy(np.array([missing], dtype=np.int32))[0]
    return np.asarray(to_numpy(pc.fill_null(idx, fill)), dtype=np.int64)


def empty_table(schema: pa.Schema) -> pa.Table:
    """``schema.empty_table()`` without loading pandas."""
    return pa.table([pa.nulls(0, f.type) for f in schema], schema=schema)
