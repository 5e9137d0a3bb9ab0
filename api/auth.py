"""API keys: constant-time checks, and the refusal to run in production with a placeholder."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Final

from core.settings import ApiSettings

PLACEHOLDER_KEYS: Final = frozenset({"dev-key", "changeme", "change-me", "demo-key", "test"})
"""Keys that are fine on a laptop and never acceptable in production."""


class InsecureSettingsError(RuntimeError):
    """The API refuses to start with these settings."""


def key_matches(candidate: str | None, keys: Iterable[str]) -> bool:
    """True when ``candidate`` is one of ``keys``; every key is compared, in constant time."""
    if not candidate:
        return False
    given = candidate.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


def check_startup(settings: ApiSettings) -> None:
    """Raise when no key is configured, or in prod when a placeholder key is."""
    keys = settings.keys()
    if not keys:
        msg = "API_KEYS is empty: set at least one key (comma-separated)"
        raise InsecureSettingsError(msg)
    if settings.app_env == "prod" and keys & PLACEHOLDER_KEYS:
        msg = "APP_ENV=prod refuses placeholder API keys: set API_KEYS to real secrets"
        raise InsecureSettingsError(msg)
