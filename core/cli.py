"""Argument types shared by every command line, so they all refuse bad input the same way."""

from __future__ import annotations

import argparse
import datetime as dt


def iso_date(text: str) -> dt.date:
    """``YYYY-MM-DD`` for argparse; anything else is a usage error naming the value."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        msg = f"invalid date {text!r}: expected YYYY-MM-DD"
        raise argparse.ArgumentTypeError(msg) from None
