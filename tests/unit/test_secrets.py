"""The key's parsing and the log redactor (no AWS: see tests/integration/test_secrets.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from core import secrets
from core.settings import PolygonSettings

pytestmark = pytest.mark.unit
KEY = "pk_unit_0123456789abcdef"


@pytest.fixture()
def redaction() -> Iterator[None]:
    """Install the record factory for one test, then put the previous one back."""
    before = logging.getLogRecordFactory()
    secrets.install_redaction()
    yield
    logging.setLogRecordFactory(before)


def test_parse_secret_raw_and_json() -> None:
    assert secrets.parse_secret(f"  {KEY}\n") == KEY
    assert secrets.parse_secret(f'{{"POLYGON_API_KEY": "{KEY}"}}') == KEY
    assert secrets.parse_secret(f'{{"api_key": "{KEY}", "other": 1}}') == KEY
    with pytest.raises(secrets.SecretError, match="fields") as err:
        secrets.parse_secret('{"user": "x"}')
    assert KEY not in str(err.value)
    with pytest.raises(secrets.SecretError, match="empty"):
        secrets.parse_secret("   ")


def test_env_key_wins_and_no_key_means_simulator() -> None:
    assert secrets.polygon_key(PolygonSettings(polygon_api_key=SecretStr(KEY))) == SecretStr(KEY)
    assert secrets.polygon_key(PolygonSettings(polygon_api_key=None)) is None


def test_redact_masks_registered_keys_query_values_and_bearer_tokens() -> None:
    secrets.register_secret(KEY)
    text = (
        f"GET http://h/v2/x?apiKey=other123&limit=5 key {KEY} "
        f"Authorization: Bearer tok-987 {{'apiKey': 'zzz999'}}"
    )
    out = secrets.redact(text)
    for leaked in (KEY, "other123", "tok-987", "zzz999"):
        assert leaked not in out
    assert "limit=5" in out


def test_record_factory_scrubs_messages_args_and_tracebacks(
    caplog: pytest.LogCaptureFixture, redaction: None
) -> None:
    secrets.register_secret(KEY)
    factory = logging.getLogRecordFactory()
    secrets.install_redaction()
    assert logging.getLogRecordFactory() is factory  # idempotent
    log = logging.getLogger("test.secrets")
    with caplog.at_level(logging.DEBUG, logger="test.secrets"):
        log.debug("url %s", f"http://h/p?apiKey={KEY}")
        try:
            raise RuntimeError(f"request failed for key {KEY}")
        except RuntimeError:
            log.exception("boom")
    assert KEY not in caplog.text
    assert "***" in caplog.text
    formatted = "\n".join(logging.Formatter().format(r) for r in caplog.records)
    assert KEY not in formatted


def test_redacting_filter_on_a_handler() -> None:
    secrets.register_secret(KEY)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (KEY,), None)
    assert secrets.RedactingFilter().filter(record)
    assert KEY not in record.getMessage()


def test_scrubbed_records_keep_their_arguments() -> None:
    """uvicorn's access formatter unpacks ``record.args``: redaction must keep them a tuple."""
    secrets.register_secret(KEY)
    args = ("127.0.0.1:5000", "GET", f"/v1/stream?symbols=A&api_key={KEY}", "1.1", 200)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s %s %s %d", args, None
    )
    secrets.redact_record(record)
    assert isinstance(record.args, tuple) and len(record.args) == 5
    assert record.args[4] == 200 and record.args[1] == "GET"
    assert record.getMessage() == "127.0.0.1:5000 GET /v1/stream?symbols=A&api_key=*** 1.1 200"


def test_key_and_token_parameters_and_headers_are_masked() -> None:
    text = (
        "?api_key=k1&apiKey=k2&apikey=k3&token=k4&access_token=k5&limit=5 "
        "{'X-API-Key': 'k6', 'Authorization': 'Basic k7'} [(b'x-api-key', b'k8')] "
        "Authorization: Bearer k9 authorization: k10"
    )
    out = secrets.redact(text)
    for i in range(1, 11):
        assert f"k{i}" not in out.replace("limit", ""), (i, out)
    assert "limit=5" in out


def test_a_secret_split_across_arguments_is_still_masked() -> None:
    secrets.register_secret(KEY)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s%s", (KEY[:6], KEY[6:]), None)
    secrets.redact_record(record)
    assert KEY not in record.getMessage()
