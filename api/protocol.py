"""uvicorn's HTTP protocol with ``TCP_NODELAY`` on every connection.

With ``--workers`` uvicorn binds the listening socket itself (protocol number 0), and asyncio
then leaves Nagle's algorithm on for the connections it accepts: a keep-alive client waiting
for the second segment of an answer (headers, then body) stalls on the peer's delayed ACK,
about 40 ms per request. Setting the option on each connection removes that whatever the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is a dependency; h11 is uvicorn's fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class NoDelayProtocol(_Base):
    """The fastest installed HTTP protocol, answering without Nagle's delay."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Turn Nagle's algorithm off, then serve as usual."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
