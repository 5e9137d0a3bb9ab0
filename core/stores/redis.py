"""Redis store for the live side: latest trades, live bars, bar events and the flow's counters.

Per symbol: the latest trade, the forming minute bar and the last final one; bar events on
pub/sub; the live flow's counters per source partition.

Every key carries a prefix so several deployments (or tests) can share one server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

import orjson
import redis

from core.settings import ServiceSettings
from core.stores import resp

_REPLY_OFF: Final = resp.pack([b"CLIENT", b"REPLY", b"OFF"])
_REPLY_ON: Final = resp.pack([b"CLIENT", b"REPLY", b"ON"])
_SET_EX: Final = b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nEX\r\n$%d\r\n%b\r\n"
_PUBLISH: Final = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
SUMS: Final = "sums"
"""``{prefix}sums:{SYMBOL}``: the summaries of a symbol's open 5m..4h windows (:mod:`core.forming`)."""
BARS: Final = "bars"
"""Bar events of ``SYMBOL`` are published on ``{prefix}bars:{SYMBOL}`` (all: ``{prefix}bars:*``)."""


def bar_channel(prefix: str, symbol: str) -> str:
    """``{prefix}bars:{symbol}``; with ``symbol`` ``*``, the pattern of every symbol's channel."""
    return f"{prefix}{BARS}:{symbol}"


def encode(doc: Mapping[str, Any]) -> bytes:
    """A document as Redis stores and publishes it (JSON)."""
    return orjson.dumps(doc, default=str)


class Document(Protocol):
    """A live record (a bar, a latest trade) that knows its Redis document."""

    def to_json(self) -> dict[str, Any]: ...


_BETWEEN: Final = b'},{"'


def encode_many(items: Sequence[Document], updated_at: str) -> list[bytes]:
    """Each item's document stamped with ``updated_at``, encoded (as alone), in one call.

    orjson's cost is mostly per call (about 1.5 us, a document's worth), and a publication
    carries thousands of documents: they are encoded as one JSON array, cut where one ends and
    the next begins. In an array of flat objects ``},{"`` occurs only there (a quote inside a
    string is always escaped); a document that nests objects shows in the count of pieces, and
    then each is encoded alone.
    """
    docs = [item.to_json() for item in items]
    for doc in docs:
        doc["updated_at"] = updated_at
    if not docs:
        return []
    pieces = orjson.dumps(docs, default=str)[3:-2].split(_BETWEEN)
    if len(pieces) != len(docs):
        return [orjson.dumps(doc, default=str) for doc in docs]
    return [b'{"' + piece + b"}" for piece in pieces]


def redis_url(settings: ServiceSettings | None = None) -> str:
    """``REDIS_URL``, or the embedded server's URL when it is unset."""
    s = settings or ServiceSettings()
    if s.redis_url is not None:
        return s.redis_url.get_secret_value()
    from core.embedded import redis_url as embedded

    return embedded(s.data_dir)


def connect(url: str) -> redis.Redis:
    """A client that returns ``str``."""
    return redis.Redis.from_url(url, decode_responses=True)


LIVE_KINDS: Final = ("latest", "bar", "final")
"""What the live flow keeps per symbol: the last trade, the forming bar, the last final bar."""


class LiveStore:
    """Latest prices and live bars, keyed ``{prefix}latest:{SYMBOL}`` and ``{prefix}bar:{SYMBOL}``."""

    def __init__(self, client: redis.Redis, prefix: str = "condvest:"):
        self.r = client
        self.prefix = prefix

    def _k(self, kind: str, symbol: str) -> str:
        return f"{self.prefix}{kind}:{symbol}"

    def channel(self, name: str) -> str:
        """A pub/sub channel name under the prefix."""
        return f"{self.prefix}{name}"

    def bar_channel(self, symbol: str) -> str:
        """The channel of ``symbol``'s bar events: a reader of a few symbols reads only them."""
        return bar_channel(self.prefix, symbol)

    def set_latest(self, symbol: str, trade: dict[str, Any]) -> None:
        """Store the latest trade (price, size, ts ISO) of ``symbol``."""
        self.r.set(self._k("latest", symbol), json.dumps(trade, default=str))

    def get_latest(self, symbol: str) -> dict[str, Any] | None:
        """The latest trade of ``symbol``, if any."""
        raw = self.r.get(self._k("latest", symbol))
        return None if raw is None else dict(json.loads(str(raw)))

    def set_bar(self, symbol: str, bar: dict[str, Any], *, publish: bool = True) -> None:
        """Store the current live minute bar and announce it on the ``bars`` channel."""
        payload = json.dumps({"symbol": symbol, **bar}, default=str)
        pipe = self.r.pipeline()
        pipe.set(self._k("bar", symbol), payload)
        if publish:
            pipe.publish(self.bar_channel(symbol), payload)
        pipe.execute()

    def set_live(
        self,
        latest: Mapping[str, dict[str, Any]],
        bars: Mapping[str, dict[str, Any]],
        *,
        publish: bool = True,
    ) -> None:
        """Store many latest trades and live bars (announcing the bars) in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for symbol, trade in latest.items():
            pipe.set(self._k("latest", symbol), json.dumps(trade, default=str))
        for symbol, bar in bars.items():
            payload = json.dumps({"symbol": symbol, **bar}, default=str)
            pipe.set(self._k("bar", symbol), payload)
            if publish:
                pipe.publish(self.bar_channel(symbol), payload)
        pipe.execute()

    def get_bar(self, symbol: str) -> dict[str, Any] | None:
        """The current live bar of ``symbol``, if any."""
        raw = self.r.get(self._k("bar", symbol))
        return None if raw is None else dict(json.loads(str(raw)))

    def get_final(self, symbol: str) -> dict[str, Any] | None:
        """The last final minute bar of ``symbol`` (its latest revision), if any."""
        raw = self.r.get(self._k("final", symbol))
        return None if raw is None else dict(json.loads(str(raw)))

    def live_keys(self, symbol: str) -> list[str]:
        """The keys of (latest trade, forming bar, last final bar) of ``symbol``, in that order."""
        return [self._k(k, symbol) for k in LIVE_KINDS]

    def get_live(self, symbol: str) -> tuple[dict[str, Any] | None, ...]:
        """(latest trade, forming bar, last final bar) of ``symbol`` in one round trip."""
        return tuple(
            None if raw is None else dict(json.loads(str(raw)))
            for raw in self.r.mget(self.live_keys(symbol))
        )

    def write_live(
        self,
        *,
        latest: Mapping[str, dict[str, Any]],
        forming: Mapping[str, dict[str, Any]],
        final: Mapping[str, dict[str, Any]],
        events: list[dict[str, Any]],
        metrics: Mapping[str, Mapping[str, Any]],
        ttl_s: int,
    ) -> None:
        """The live flow's writes in one server-side script (:meth:`write_encoded`)."""
        docs: list[tuple[str, bytes]] = []
        encoded: dict[int, bytes] = {}  # a bar stored and published is encoded once
        for kind, group in (("latest", latest), ("bar", forming), ("final", final)):
            for symbol, doc in group.items():
                docs.append((self._k(kind, symbol), data := encode(doc)))
                encoded[id(doc)] = data
        published = [(str(d["symbol"]), encoded.get(id(d)) or encode(d)) for d in events]
        self.write_encoded(docs=docs, events=published, metrics=metrics, ttl_s=ttl_s)

    def write_encoded(
        self,
        *,
        docs: Sequence[tuple[str, bytes]],
        events: Sequence[tuple[str, bytes]],
        metrics: Mapping[str, Mapping[str, Any]],
        ttl_s: int,
    ) -> None:
        """Encoded documents in one round trip; every key expires after ``ttl_s``.

        Each (key, JSON) of ``docs`` is stored (SET EX), then each (symbol, JSON) of ``events``
        published on the symbol's channel, then each of ``metrics`` written as a hash. A
        publication carries thousands of documents, so the commands are framed by hand, one
        template each (redis-py's pipeline costs about ten times more per command), and sent
        between ``CLIENT REPLY OFF`` and ``ON``: one reply to read instead of thousands. Plain
        commands, not a Lua script: a script holds the server for all its commands, so an
        alert published beside a minute close's thousands of documents waited for all of them,
        and the server spent three times the CPU. The cost: a command the server refused would
        go unreported; SET, PUBLISH and HSET refuse nothing but memory under a ``noeviction``
        policy, and every key here has an expiry, so a ``volatile-*`` or ``allkeys-*`` policy
        evicts instead.
        """
        if not docs and not events and not metrics:
            return
        ttl = b"%d" % ttl_s
        head = self.bar_channel("").encode()
        out = [_REPLY_OFF]
        for key, data in docs:
            k = key.encode()
            out.append(_SET_EX % (len(k), k, len(data), data, len(ttl), ttl))
        for symbol, data in events:
            channel = head + symbol.encode()
            out.append(_PUBLISH % (len(channel), channel, len(data), data))
        for part, m in metrics.items():
            hashed = self._k("metrics:live", part).encode()
            fields = [x.encode() for k, v in m.items() for x in (str(k), str(v))]
            if fields:
                out.append(resp.pack([b"HSET", hashed, *fields]))
            out.append(resp.pack([b"EXPIRE", hashed, ttl]))
        out.append(_REPLY_ON)
        resp.call(self.r, b"".join(out))

    def key(self, kind: str, name: str) -> str:
        """``{prefix}{kind}:{name}``.

        Kinds ``latest``, ``bar`` (forming) and ``final``; a 5m..4h bar's name is
        ``{interval}:{SYMBOL}``.
        """
        return self._k(kind, name)

    def live_metrics(self) -> dict[str, dict[str, str]]:
        """The live flow's counters per source partition."""
        prefix = self._k("metrics:live", "")
        out: dict[str, dict[str, str]] = {}
        for key in self.r.scan_iter(match=f"{prefix}*", count=1000):
            out[str(key)[len(prefix) :]] = {str(k): str(v) for k, v in self.r.hgetall(key).items()}
        return out

    def publish(self, name: str, message: dict[str, Any]) -> None:
        """Publish ``message`` as JSON on channel ``name``."""
        self.r.publish(self.channel(name), json.dumps(message, default=str))

    def clear(self) -> None:
        """Delete every key under the prefix."""
        keys = list(self.r.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.r.delete(*keys)
