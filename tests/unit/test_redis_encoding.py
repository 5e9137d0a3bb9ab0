"""The live sinks' hand-built encoding equals the plain one, byte for byte."""

from __future__ import annotations

from typing import Any

import orjson
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from core.stores import resp
from core.stores.redis import Document, encode_many
from dataflows.minute_fold import LastTrade, MinuteBar

AT = "2026-12-07T14:30:00.123456+00:00"


def encode_at(item: Document, updated_at: str) -> bytes:
    """The plain encoding: one document, stamped, in one call."""
    doc = item.to_json()
    doc["updated_at"] = updated_at
    return orjson.dumps(doc, default=str)


class _Doc:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def to_json(self) -> dict[str, Any]:
        return dict(self.doc)


def _bar(symbol: str, vwap: float | None) -> MinuteBar:
    return MinuteBar(
        symbol=symbol, start=1_765_117_800_000, open=1e-5, high=1e16, low=5e-324, close=0.1,
        volume=0.5, vwap=vwap, trades=3, final=False, revision=2, partial=True,
    )  # fmt: skip


def _trade(ident: str | None) -> LastTrade:
    return LastTrade("BRK.B", 412.5, 0.25, 1_765_117_800_007, -1, 7, ident, (12, 37))


def test_many_documents_equal_each_alone() -> None:
    items: list[Any] = [
        _bar("A", 1.25),
        _trade('},{"symbol":"X"}'),  # the cut's bytes inside a string
        _bar('Q"},{"', None),
        _trade(None),
        _Doc({"symbol": "S", "windows": {"5m": {"start": 1}, "15m": {"start": 2}}}),
        _Doc({"symbol": "T", "list": [{"a": 1}, {"b": 2}]}),  # nested objects in an array
        _Doc({"symbol": "U", "text": 'é\n\\"}'}),
    ]
    assert encode_many(items, AT) == [encode_at(x, AT) for x in items]
    for i in range(len(items)):
        alone = items[i : i + 1]
        assert encode_many(alone, AT) == [encode_at(alone[0], AT)]
    assert encode_many([], AT) == []
    assert orjson.loads(encode_many([_trade("1")], AT)[0])["updated_at"] == AT


def test_packed_command_equals_redis_py() -> None:
    args = [b"EVALSHA", b"ab" * 20, b"2", b"k:1", "k:é".encode(), b"", b'{"x":1}\r\n', b"\x00\xff"]
    encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
    packer = PythonRespSerializer(6000, encoder.encode)
    expected = b"".join(packer.pack(*args))  # type: ignore[no-untyped-call]
    assert resp.pack(args) == expected
