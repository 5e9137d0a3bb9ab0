"""API keys: constant-time checks, and the refusal to run in production with a placeholder."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Final

from core.settings import ApiSettings

PLACEHOLDER_KEYS: Final = frozenset(
    {
        "dev-key", "demo-key", "local-dev-key", "test", "test-key", "changeme", "change-me",
        "password", "secret", "apikey", "api-key", "api_key", "example", "default", "admin",
        "letmein", "x", "key", "token",
    }
)  # fmt: skip
"""Keys that are fine on a laptop and never acceptable in a shared environment."""
MIN_KEY_LENGTH: Final = 32
"""A key shorter than this can be guessed; ``secrets.token_urlsafe(32)`` gives 43 characters."""
RELAXED_ENVS: Final = frozenset({"dev", "test"})


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


def weak_key_reason(key: str) -> str | None:
    """Why ``key`` is too weak for a shared environment, or None (never quotes the key)."""
    if key.lower() in PLACEHOLDER_KEYS:
        return "is a placeholder"
    if len(key) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    if len(set(key)) < 8:
        return "repeats too few characters"
    return None


def check_startup(settings: ApiSettings) -> None:
    """Raise when no key is configured, or outside dev and test when any key is weak."""
    keys = settings.keys()
    if not keys:
        msg = "API_KEYS is empty: set at least one key (comma-separated)"
        raise InsecureSettingsError(msg)
    if settings.app_env in RELAXED_ENVS:
        return
    weak = sorted({r for k in keys if (r := weak_key_reason(k)) is not None})
    if weak:
        n = sum(weak_key_reason(k) is not None for k in keys)
        msg = (
            f"APP_ENV={settings.app_env} refuses weak API keys: {n} of {len(keys)} "
            f"{' and '.join(weak)}; use keys of {MIN_KEY_LENGTH}+ random characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
        raise InsecureSettingsError(msg)


def owner_id(key: str) -> str:
    """The stable id of the holder of ``key``: who owns alert rules (never the key itself).

    The same id the key store gives a bootstrap key (``env_`` and 12 hex digits of its
    SHA-256), so rules keep their owner when keys move to a store with ids of their own.
    """
    return "env_" + hashlib.sha256(key.encode()).hexdigest()[:12]
