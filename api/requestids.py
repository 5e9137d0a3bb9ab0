"""Request ids: one per request, in the ``X-Request-ID`` header, every log line and every error.

A caller's own id is kept when it is short and plain (so a gateway's id follows the request
through); otherwise a new one is made. The id lives in a context variable set by the
middleware, and :class:`RequestIdFilter` (on the handlers of :func:`uvicorn_log_config`) copies
it onto every record as ``request_id`` (``-`` outside a request).
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from typing import Any, Final

HEADER: Final = "X-Request-ID"
_VALID: Final = re.compile(r"^[A-Za-z0-9._:\-]{8,64}$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served, if any."""
    return _current.get()


def accept_or_new(given: str | None) -> str:
    """``given`` when it is 8-64 plain characters, else a new random id."""
    if given and _VALID.match(given):
        return given
    return uuid.uuid4().hex


def set_request_id(value: str | None) -> contextvars.Token[str | None]:
    """Make ``value`` the current id; reset with the returned token."""
    return _current.set(value)


def reset_request_id(token: contextvars.Token[str | None]) -> None:
    """Restore the id before :func:`set_request_id`."""
    _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Put the current request id on each record as ``request_id`` (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Label and keep the record."""
        record.request_id = _current.get() or "-"
        return True


def uvicorn_log_config(level: str = "info") -> dict[str, Any]:
    """Uvicorn's own logging setup with the request id at the start of every line.

    The access line keeps its usual ending (``"GET /path HTTP/1.1" 200 OK``) so tools reading it
    still work.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "formatters": {k: dict(v) for k, v in LOGGING_CONFIG["formatters"].items()},
    }
    config["formatters"]["default"]["fmt"] = "%(levelprefix)s [%(request_id)s] %(message)s"
    config["formatters"]["access"]["fmt"] = (
        '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    config["filters"] = {"request_id": {"()": RequestIdFilter}}
    config["handlers"] = {
        k: {**v, "filters": ["request_id"]} for k, v in LOGGING_CONFIG["handlers"].items()
    }
    config["loggers"] = {k: dict(v) for k, v in LOGGING_CONFIG["loggers"].items()}
    config["loggers"]["api"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    config["loggers"]["core"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
