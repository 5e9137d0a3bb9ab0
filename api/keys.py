"""``python -m api.keys``: create, list and revoke API keys stored (hashed) in Postgres.

    python -m api.keys create --name backtests --scopes read,stream --rate-limit 600
    python -m api.keys list [--all]
    python -m api.keys revoke key_1a2b3c4d5e6f     # or the key's name

``create`` prints the key once; only its SHA-256 is stored. Uses ``DATABASE_URL`` (the embedded
server when unset). Exit 2 for usage errors, 1 when the database refuses or nothing matched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import psycopg

from api import principals
from core.secrets import install_redaction
from core.settings import ApiSettings, SettingsError, load_settings
from core.stores import postgres


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m api.keys",
        description="Manage the API's keys (stored hashed in Postgres; DATABASE_URL).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="make a key and print it once")
    c.add_argument("--name", required=True, help="who or what the key is for (unique if active)")
    c.add_argument(
        "--scopes",
        default="read",
        help=f"comma-separated, of {', '.join(principals.SCOPES)} (default: read)",
    )
    c.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        help="requests per minute, 0 for none (default: API_RATE_LIMIT)",
    )
    ls = sub.add_parser("list", help="the active keys (never the keys themselves)")
    ls.add_argument("--all", action="store_true", help="revoked keys too")
    r = sub.add_parser("revoke", help="revoke a key by id or name")
    r.add_argument("key", help="the key's id (key_...) or name")
    return p


def _fmt_time(value: object) -> str:
    return "-" if value is None else str(value)[:19]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    install_redaction()
    try:
        settings = load_settings(ApiSettings)
    except SettingsError as exc:
        print(f"python -m api.keys: {exc}", file=sys.stderr)
        return 2
    if args.command == "create":
        if not args.name.strip() or len(args.name) > 100:
            parser.error("--name must be 1-100 characters")
        try:
            scopes = principals.parse_scopes(args.scopes)
        except ValueError as exc:
            parser.error(f"--scopes: {exc}")
        limit = settings.api_rate_limit if args.rate_limit is None else args.rate_limit
        if limit < 0:
            parser.error("--rate-limit must be 0 (none) or more")
    try:
        with postgres.connect(postgres.database_url(settings), autocommit=True) as conn:
            principals.migrate(conn)
            if args.command == "create":
                key_id, key = principals.create(conn, args.name.strip(), scopes, limit)
                print(f"created {key_id} ({args.name.strip()}; scopes {','.join(scopes)};"
                      f" {limit or 'no'} requests/min limit)")  # fmt: skip
                print("key (shown once, store it now):", file=sys.stderr)
                print(key)
                return 0
            if args.command == "list":
                rows = principals.records(conn, include_revoked=args.all)
                print(f"{'id':<18} {'name':<24} {'scopes':<20} {'limit/min':>9} "
                      f"{'created':<19} revoked")  # fmt: skip
                for k in rows:
                    print(f"{k.id:<18} {k.name[:24]:<24} {','.join(k.scopes):<20} "
                          f"{k.rate_limit:>9} {_fmt_time(k.created_at):<19} "
                          f"{_fmt_time(k.revoked_at)}")  # fmt: skip
                print(f"{len(rows)} key(s)", file=sys.stderr)
                return 0
            revoked = principals.revoke(conn, args.key)
    except ValueError as exc:
        print(f"python -m api.keys: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"python -m api.keys: database error: {type(exc).__name__}", file=sys.stderr)
        return 1
    if not revoked:
        print(f"python -m api.keys: no active key with id or name {args.key!r}", file=sys.stderr)
        return 1
    print(f"revoked {', '.join(revoked)} (effective within API_KEY_CACHE_S seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
