"""`python -m bench [name ...]`: run benchmarks (all by default); `--list` names them."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "service_info": ("bench.service_info:main", "GET /service-info and /health vs a bare ASGI app"),
    "container_token": ("bench.container_token:main", "POST /container-token vs GET /service-info"),
    "proxy_pull": ("bench.proxy:pull", "skopeo copy of a 5-layer ~200 MB image: proxy vs direct vs pull-through"),
    "proxy_manifests": ("bench.proxy:manifests", "manifest GETs, 50 clients: proxy vs upstream registry"),
    "proxy_blob_memory": ("bench.proxy:blob_memory", "web RSS while 20 clients stream a 500 MB blob"),
    "builds": ("bench.builds:main", "a build POST -> pushed vs buildah bud + push by hand; cached request latency"),
    "admin_scale": ("bench.admin_scale:main", "admin pages and API req/s (POST, describe): empty vs 10^6 requests"),
    "purge": ("bench.purge:main", "manage.py purge of 10^6 expired requests: time, peak RSS; vs the ORM delete"),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    args = parser.parse_args()
    if args.list:
        for name, (_, description) in BENCHMARKS.items():
            print(f"{name:<18} {description}")
        return
    for name in args.names or list(BENCHMARKS):
        target, description = BENCHMARKS[name]
        print(f"== {name}: {description}", flush=True)
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    main()
