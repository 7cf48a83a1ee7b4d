"""`python -m bench [name ...]`: run benchmarks (all by default); `--list` names them."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "service_info": "GET /service-info and /health vs a bare ASGI app",
    "container_token": "POST /container-token (Postgres, cached upstream check) vs GET /service-info",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    args = parser.parse_args()
    if args.list:
        for name, description in BENCHMARKS.items():
            print(f"{name:<16} {description}")
        return
    for name in args.names or list(BENCHMARKS):
        print(f"== {name}: {BENCHMARKS[name]}")
        importlib.import_module(f"bench.{name}").main()


if __name__ == "__main__":
    main()
