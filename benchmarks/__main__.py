"""``python -m benchmarks [NAME ...]``: run the registered harnesses (all by default).

Each harness is a module runnable on its own (``python -m benchmarks.<module>``); this is only
the registry ``make bench`` goes through. Add a harness by adding a line to ``HARNESSES``.
"""

from __future__ import annotations

import runpy
import sys

HARNESSES: dict[str, str] = {
    "batch": "benchmarks.bench_batch",
    "actions": "benchmarks.bench_actions",
    "gold": "benchmarks.bench_gold",
    "ingest": "benchmarks.bench_ingest",
    "live": "benchmarks.live_fold",
    "intraday": "benchmarks.bench_intraday",
    "api": "benchmarks.bench_api",
    "alerts": "benchmarks.bench_alerts",
}


def main(argv: list[str]) -> int:
    names = argv or list(HARNESSES)
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        print(f"unknown harness {unknown}; choose from {sorted(HARNESSES)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name} ({HARNESSES[name]})", flush=True)
        saved = sys.argv
        sys.argv = [HARNESSES[name]]
        try:
            runpy.run_module(HARNESSES[name], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                return int(exc.code) if isinstance(exc.code, int) else 1
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
