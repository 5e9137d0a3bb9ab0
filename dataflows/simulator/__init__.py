"""The offline Polygon: a deterministic simulated market behind Polygon's real protocols.

The real ``polygon-api-client`` (RESTClient and WebSocketClient) runs against it unmodified,
so the demo, the tests and the benchmarks exercise the same code paths as production.

:mod:`~dataflows.simulator.market` is the pure model; :mod:`~dataflows.simulator.server` serves
it (``SimulatorServer`` in-process, ``python -m dataflows.simulator`` standalone).
"""

from dataflows.simulator.bars import Bars
from dataflows.simulator.market import Market, Split
from dataflows.simulator.universe import Listing

__all__ = ["Bars", "Listing", "Market", "Split"]
