"""The Polygon key (environment or AWS Secrets Manager) and a log redactor that keeps it secret.

The key is read from ``POLYGON_API_KEY``, else from the Secrets Manager secret named by
``POLYGON_SECRET_ID`` (a raw string, or JSON with a ``POLYGON_API_KEY``/``api_key``/``key``
field). A secret fetched from AWS is cached per (secret id, endpoint), so a flow asks once.

Every key we obtain is registered with the redactor (the Polygon key here, the API's keys when
it starts). :func:`install_redaction` scrubs registered keys, key and token query parameters
(``api_key``, ``apiKey``, ``apikey``, ``token``, ``access_token``), ``Authorization`` and
``X-API-Key`` header values and ``Bearer`` tokens from every log record created afterwards
(message, arguments, traceback), whichever handler then writes it. Arguments are scrubbed one by
one and keep their types, because formatters such as uvicorn's access log unpack them. Our HTTP
code never puts the Polygon key in a URL in the first place (it sends ``Authorization:
Bearer``); this is defence in depth for libraries that log URLs or headers at DEBUG.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any, Final

from pydantic import SecretStr

from core.settings import PolygonSettings

MASK: Final = "***"
_JSON_FIELDS: Final = ("POLYGON_API_KEY", "polygon_api_key", "api_key", "apiKey", "key")
_KEY_NAMES: Final = r"(?:api[_-]?key|token|access[_-]?token|x-api-key)"
_PATTERNS: Final = (
    # query parameters: ?api_key=..., &token=...
    re.compile(rf"(?i)(\b{_KEY_NAMES}=)[^&\s\"'#<>]+"),
    # mappings and headers: 'apiKey': '...', X-API-Key: ..., "token"=...
    re.compile(rf"(?i)([\"']?\b{_KEY_NAMES}[\"']?\s*[:=]\s*b?[\"']?)[^&\s\"'#<>,}}\])]+"),
    # raw header pairs as servers log them: (b'x-api-key', b'...')
    re.compile(r"(?i)(b?[\"'](?:x-api-key|authorization)[\"']\s*,\s*b?[\"'])[^\"']+"),
    # Authorization: <scheme> <credentials>, and any Bearer token
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*b?[\"']?(?:[a-z]+\s+)?)[^\s\"',}\])]+"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',}\])]+"),
)
_lock = threading.Lock()
_secrets: set[str] = set()
_cache: dict[tuple[str, str | None], SecretStr] = {}


class SecretError(RuntimeError):
    """The key could not be read; the message names the secret id, never its value."""


# -- redaction ------------------------------------------------------------------------------
def register_secret(value: str | SecretStr | None) -> None:
    """Scrub ``value`` from logs from now on (values shorter than 4 characters are ignored)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with registered secrets, ``apiKey=`` values and Bearer tokens masked."""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{MASK}", text)
    return text


def _scrub(value: object) -> object:
    """``value`` with secrets masked, keeping its type where a formatter may rely on it."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, tuple | list):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    text = str(value)  # a URL or request object: masked only when it holds a secret
    masked = redact(text)
    return value if masked == text else masked


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Scrub one record in place: its message, each argument, traceback text and stack.

    The arguments stay a tuple (or mapping) of the same length and types, so the record still
    formats as its logger meant. Only when a secret appears just in the formatted message (split
    across arguments), or the scrubbed parts no longer format, is the record collapsed to its
    scrubbed text.
    """
    record.msg = _scrub(record.msg)
    if record.args:
        record.args = _scrub(record.args)  # type: ignore[assignment]  # same shape as before
    try:
        message = record.getMessage()
    except (TypeError, ValueError, KeyError):  # a bad format string: keep the parts, scrubbed
        record.msg, record.args = redact(f"{record.msg} {record.args}"), None
    else:
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class RedactingFilter(logging.Filter):
    """A handler filter applying :func:`redact_record` (for handlers built elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub and keep the record."""
        redact_record(record)
        return True


_installed: Callable[..., logging.LogRecord] | None = None


def install_redaction() -> None:
    """Scrub every log record at creation, whatever logger or handler; idempotent."""
    global _installed
    with _lock:
        if _installed is not None and logging.getLogRecordFactory() is _installed:
            return
        inner = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(inner(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = factory


# -- the key --------------------------------------------------------------------------------
def parse_secret(raw: str) -> str:
    """The key inside a secret string: a JSON object's key field, else the trimmed string."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for name in _JSON_FIELDS:
                value = doc.get(name)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            msg = f"the secret is JSON without any of the fields {list(_JSON_FIELDS)}"
            raise SecretError(msg)
    if not text:
        msg = "the secret is empty"
        raise SecretError(msg)
    return text


def _from_secrets_manager(secret_id: str, endpoint: str | None, region: str | None) -> SecretStr:
    from botocore.exceptions import BotoCoreError, ClientError

    from core.aws import client

    try:
        reply = client("secretsmanager", endpoint_url=endpoint, region=region).get_secret_value(
            SecretId=secret_id
        )
    except (ClientError, BotoCoreError) as exc:
        msg = f"cannot read the Polygon key from Secrets Manager secret {secret_id!r}: {exc}"
        raise SecretError(msg) from None
    raw = reply.get("SecretString")
    if not isinstance(raw, str):
        msg = f"Secrets Manager secret {secret_id!r} has no SecretString"
        raise SecretError(msg)
    try:
        return SecretStr(parse_secret(raw))
    except SecretError as exc:
        msg = f"Secrets Manager secret {secret_id!r}: {exc}"
        raise SecretError(msg) from None


def polygon_key(settings: PolygonSettings) -> SecretStr | None:
    """``POLYGON_API_KEY``, else the Secrets Manager secret ``POLYGON_SECRET_ID``, else None.

    None means "no key": callers then use the simulator. The key is registered for redaction.
    """
    if settings.polygon_api_key is not None:
        register_secret(settings.polygon_api_key)
        return settings.polygon_api_key
    if not settings.polygon_secret_id:
        return None
    endpoint = getattr(settings, "aws_endpoint_url", None) or os.environ.get("AWS_ENDPOINT_URL")
    region = getattr(settings, "aws_default_region", None)
    cache_key = (settings.polygon_secret_id, endpoint)
    with _lock:
        cached = _cache.get(cache_key)
    if cached is None:
        cached = _from_secrets_manager(settings.polygon_secret_id, endpoint, region)
        with _lock:
            _cache[cache_key] = cached
    register_secret(cached)
    return cached


def clear_cache() -> None:
    """Forget keys fetched from Secrets Manager (after a rotation, or between tests)."""
    with _lock:
        _cache.clear()
