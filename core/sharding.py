"""Stable symbol sharding: ``--shard I/N`` splits the market the same way on every machine.

Python's ``hash`` is salted per process, so a keyed blake2b digest is used instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

_SHARD_RE = re.compile(r"^(\d+)/(\d+)$")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            msg = f"invalid shard {self.index}/{self.count}: need 0 <= I < N"
            raise ValueError(msg)

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``I/N``."""
        m = _SHARD_RE.match(text.strip())
        if m is None:
            msg = f"invalid shard {text!r}: expected I/N, e.g. 0/4"
            raise ValueError(msg)
        return cls(int(m[1]), int(m[2]))

    def owns(self, symbol: str) -> bool:
        """True when ``symbol`` belongs to this shard."""
        return self.count == 1 or shard_of(symbol, self.count) == self.index

    def select(self, symbols: Iterable[str]) -> list[str]:
        """The symbols this shard owns, in the given order."""
        return [s for s in symbols if self.owns(s)]


def shard_of(symbol: str, count: int) -> int:
    """The shard index of ``symbol`` among ``count`` shards."""
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count
