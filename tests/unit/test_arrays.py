"""core.arrays gives what pyarrow's own conversions give, without loading pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core import arrays

pytestmark = pytest.mark.unit

CASES = [
    pa.array([1, 2, 3], pa.int32()),
    pa.array([1, 2, 3, 4, 5], pa.int64()).slice(2),
    pa.array([1.5, None, 3.0]),
    pa.array([1.5, 2.0, 3.0]).slice(1, 1),
    pa.array([True, False, True, True, False, False, True, False, True, True]).slice(3),
    pa.array(["a", "b", None]),
    pa.array([1, None], pa.int64()),
    pa.array([1, 2], pa.uint8()),
    pc.cast(pa.array([1, 2], pa.date32()), pa.int32()),
    pa.array([], pa.float64()),
]


@pytest.mark.parametrize("values", CASES, ids=lambda a: str(a.type))
def test_to_numpy_matches_pyarrow(values: pa.Array) -> None:
    for given in (values, pa.chunked_array([values]), pa.chunked_array([values, values])):
        ours = arrays.to_numpy(given)
        theirs = (
            given.to_numpy()
            if isinstance(given, pa.ChunkedArray)
            else given.to_numpy(zero_copy_only=False)
        )
        assert ours.dtype == theirs.dtype
        assert np.array_equal(ours, theirs, equal_nan=ours.dtype.kind == "f")
    assert arrays.to_numpy(pa.chunked_array([], pa.int64())).dtype == np.int64


def test_from_numpy_strings_and_empty_match_pyarrow() -> None:
    for values in (np.arange(5, dtype=np.int64), np.array([0.5, -1.25]), np.arange(10) % 3 == 0):
        assert arrays.from_numpy(values).equals(pa.array(values))
    days = np.array([0, 20000], dtype=np.int32)
    assert arrays.from_numpy(days, pa.date32()).equals(pa.array(days, pa.date32()))
    assert arrays.from_numpy(np.arange(6, dtype=np.int64)[::2]).equals(pa.array([0, 2, 4]))
    with pytest.raises(TypeError):
        arrays.from_numpy(np.arange(3, dtype=np.int64), pa.date32())
    assert arrays.strings(["A", "", "BRK.B"]).equals(pa.array(["A", "", "BRK.B"]))
    schema = pa.schema([("a", pa.string()), ("b", pa.list_(pa.int64()))])
    assert arrays.empty_table(schema).equals(schema.empty_table())


def test_conversions_never_load_pandas() -> None:
    code = (
        "import sys, numpy as np, pyarrow as pa\n"
        "from core import arrays\n"
        "a = arrays.from_numpy(np.arange(4.0))\n"
        "arrays.to_numpy(pa.chunked_array([a, a])); arrays.strings(['x'])\n"
        "arrays.empty_table(pa.schema([('x', pa.int64())]))\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
