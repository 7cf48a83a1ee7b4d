"""The service at scale (issue 14): each admin page, and the API's throughput, on an empty database and on one
holding 10^6 container requests (plus 250 000 layers, 50 000 layer downloads, 200 000 generated documents and
100 000 builds), side by side in one run. Targets: every admin page under 300 ms with 10^6 requests; the API no
slower there than on the empty database. The purge of 10^6 expired requests is `python -m bench purge`.

Rows are inserted with SQL as weeks of use would leave them (four weeks of requests, most expired, 1 % revoked,
a tenth on arm64, images from a few thousand repositories), then ANALYZEd. Each page is fetched in a separate
process per database through Django's test client as a logged-in superuser (the view and its queries and
template, no network): one warm-up, then the median of ROUNDS fetches.

The API: the whole service (`manage.py run`) on each database at once, each with its Redis database and
local registry holding a busybox image; wrk loads POST /container-token (the upstream check cached after the
first request: validation, token allocation, the insert) and GET /container-token/<token> (describe) on both,
interleaved, for API_ROUNDS rounds of API_SECONDS s; the median round of each.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg

from bench.load import LoadResult, interleaved
from tests.support.images import Builder
from tests.support.network import free_port
from tests.support.service import RunningService, service_environment, start_service, throwaway_database

REQUESTS = 1_000_000
ROUNDS = 5
TARGET_MS = 300.0
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "0123456789ab"  # one known request, searched by token
API_SECONDS = 5
API_ROUNDS = 3
API_CONNECTIONS = 32
API_WEB_WORKERS = 2
# One Redis database per service (cache, broker): bench.service's 13 for the empty one, 12 for the full one.
API_REDIS_URLS = {"empty": "redis://127.0.0.1:6379/13", "10^6": "redis://127.0.0.1:6379/12"}
ENDPOINTS = ("POST /container-token", "GET /container-token/<token>")
ADMIN = "/admin/requests_app/"
PAGES = [
    ("requests: list", f"{ADMIN}containerrequest/"),
    ("requests: page 100", f"{ADMIN}containerrequest/?p=100"),
    ("requests: search by token", f"{ADMIN}containerrequest/?q={TOKEN}"),
    ("requests: search by image (part)", f"{ADMIN}containerrequest/?q=biocontainers/tool4241"),
    ("requests: search by image (common)", f"{ADMIN}containerrequest/?q=library/tool42"),
    ("requests: search, rare image", f"{ADMIN}containerrequest/?q=bench/needle"),
    ("requests: filter revoked", f"{ADMIN}containerrequest/?state=revoked"),
    ("requests: filter active", f"{ADMIN}containerrequest/?state=active"),
    ("requests: filter arm64", f"{ADMIN}containerrequest/?platform=linux%2Farm64"),
    ("requests: filter api v2", f"{ADMIN}containerrequest/?api_version__exact=v2"),
    ("requests: sort by image", f"{ADMIN}containerrequest/?o=2"),
    ("requests: sort by expiry", f"{ADMIN}containerrequest/?o=-5"),
    ("requests: dates of a month", f"{ADMIN}containerrequest/?created_at__year={{year}}&created_at__month={{month}}"),
    ("layers: list", f"{ADMIN}injectedlayer/"),
    ("layers: search by digest", f"{ADMIN}injectedlayer/?q=sha256:{'0' * 60}1000"),
    ("layers: filter failed", f"{ADMIN}injectedlayer/?state__exact=failed"),
    ("downloads: list", f"{ADMIN}layerdownload/"),
    ("downloads: filter failed", f"{ADMIN}layerdownload/?state__exact=failed"),
    ("documents: list", f"{ADMIN}generateddocument/"),
    ("documents: filter configs", f"{ADMIN}generateddocument/?media_type=application%2Fvnd.oci.image.config.v1%2Bjson"),
    ("builds: list", "/admin/builds/build/"),
    ("builds: search by target", "/admin/builds/build/?q=registry.example.org/wave/build:ab12"),
    ("builds: filter failed", "/admin/builds/build/?state__exact=failed"),
]

# Column expressions for the rows inserted (i: 1..n from generate_series); other NOT NULL columns get their
# type's zero value.
IMAGE = "(array['docker.io/library/','quay.io/biocontainers/','ghcr.io/org/','public.ecr.aws/x/'])[1 + i % 4]"
TABLES = {
    "requests_app_containerrequest": (
        REQUESTS,
        {
            "token": f"CASE WHEN i = 1 THEN '{TOKEN}' ELSE substr(md5(i::text), 1, 12) END",
            "api_version": "CASE WHEN i % 2 = 0 THEN 'v2' ELSE 'v1' END",
            "source_image": f"CASE WHEN i = 500000 THEN 'quay.io/bench/needle:1' ELSE {IMAGE} || 'tool' || (i % 5000)"
            " || ':' || (i % 13) END",
            "target_image": "'wave.example.org/wt/' || substr(md5(i::text), 1, 12) || '/library/tool'",
            "platform": "CASE WHEN i % 10 = 0 THEN 'linux/arm64' ELSE 'linux/amd64' END",
            "container_config": "'{}'::jsonb",
            "generated_digests": "'[]'::jsonb",
            "fingerprint": "md5(i::text || 'fp')",
            "user_name": "CASE WHEN i % 3 = 0 THEN 'user' || (i % 2000) ELSE '' END",
            "user_email": "CASE WHEN i % 3 = 0 THEN 'user' || (i % 2000) || '@example.org' ELSE '' END",
            "created_at": "now() - i * interval '2.4 seconds'",
            "expires_at": "now() - i * interval '2.4 seconds' + interval '12 hours'",
            "revoked_at": "CASE WHEN i % 100 = 0 THEN now() - i * interval '2.4 seconds' + interval '1 minute' END",
        },
    ),
    "requests_app_layerdownload": (
        50_000,
        {
            "identity": "md5(i::text) || md5(i::text || 'x')",
            "url": "'https://files.example.org/l/' || i || '.tgz'",
            "gzip_digest": "'sha256:' || lpad(i::text, 64, '0')",
            "gzip_size": "1000 + i",
            "tar_digest": "'sha256:' || lpad(i::text, 64, 'f')",
            "state": "CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'ready' END",
            "created_at": "now() - i * interval '48 seconds'",
            "queued_at": "now() - i * interval '48 seconds'",
        },
    ),
    "requests_app_generateddocument": (
        200_000,
        {
            "digest": "'sha256:' || md5(i::text) || md5(i::text || 'd')",
            "media_type": "CASE WHEN i % 2 = 0 THEN 'application/vnd.oci.image.config.v1+json' "
            "ELSE 'application/vnd.oci.image.manifest.v1+json' END",
            "size": "100 + i % 1000",
            "created_at": "now() - i * interval '12 seconds'",
        },
    ),
    "builds_build": (
        100_000,
        {
            "build_id": "'bd-' || substr(md5(i::text), 1, 16) || '_1'",
            "kind": "'build'",
            "container_id": "substr(md5(i::text), 1, 16)",
            "number": "1",
            "target_image": "'registry.example.org/wave/build:' || substr(md5(i::text), 1, 16)",
            "repository": "'registry.example.org/wave/build'",
            "platform": "'linux/amd64'",
            "container_file": "'FROM busybox' || chr(10) || 'RUN echo ' || i",
            "state": "CASE WHEN i % 20 = 0 THEN 'failed' ELSE 'succeeded' END",
            "created_at": "now() - i * interval '24 seconds'",
            "queued_at": "now() - i * interval '24 seconds'",
        },
    ),
}
# One layer for every fourth request (a data layer; each 50th failed), joined by SQL to the requests' ids.
LAYERS = """
INSERT INTO requests_app_injectedlayer (request_id, position, kind, url, gzip_digest, gzip_size, tar_digest, state,
    failure_reason, blob_key)
SELECT id, 0, 'data', '', 'sha256:' || lpad(id::text, 64, '0'), 100, 'sha256:' || lpad(id::text, 64, 'e'),
    CASE WHEN id % 200 = 0 THEN 'failed' ELSE 'ready' END, '', ''
FROM requests_app_containerrequest WHERE id % 4 = 0
"""
ZERO = {"character varying": "''", "text": "''", "integer": "0", "smallint": "0", "bigint": "0", "jsonb": "'{}'",
        "boolean": "false", "timestamp with time zone": "now()"}  # fmt: skip


def insert_rows(database_url: str) -> float:
    """Fill the database with SQL; seconds taken."""
    started = time.perf_counter()
    with psycopg.connect(database_url, autocommit=True) as connection:
        for table, (count, columns) in TABLES.items():
            required = connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s "
                "AND is_nullable = 'NO' AND column_name <> 'id'", [table],
            ).fetchall()  # fmt: skip
            values = {**{name: ZERO[kind] for name, kind in required if name not in columns}, **columns}
            names = ", ".join(values)
            connection.execute(
                f"INSERT INTO {table} ({names}) SELECT {', '.join(values.values())} "  # type: ignore[arg-type]  # noqa: S608
                f"FROM generate_series(1, {count}) AS i ON CONFLICT DO NOTHING"
            )
        connection.execute(LAYERS)  # type: ignore[arg-type]
        connection.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def migrate(database_url: str, data_dir: Path) -> None:
    env = service_environment(DATABASE_URL=database_url, WAVE_DATA_DIR=str(data_dir))
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def measure(database_url: str, data_dir: Path) -> dict[str, float]:
    """Median ms per page, measured in a Django process of its own on `database_url`."""
    env = service_environment(DATABASE_URL=database_url, WAVE_DATA_DIR=str(data_dir), WAVE_LOG_LEVEL="WARNING")
    done = subprocess.run(
        [sys.executable, "-m", "bench.admin_scale", "--measure"], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure_here() -> None:
    """(In the child process) fetch every page, print {page: median ms} as JSON."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wave_site.settings")
    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.utils import timezone

    settings.ALLOWED_HOSTS = ["*"]
    user, _ = get_user_model().objects.get_or_create(username="bench", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    now = timezone.localtime()
    medians = {}
    for name, url in PAGES:
        url = url.format(year=now.year, month=now.month)
        times = []
        for _ in range(ROUNDS + 1):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 and not (response.status_code == 302 and "?p=" in url):  # empty: no page
                raise RuntimeError(f"{url}: HTTP {response.status_code}")
        medians[name] = statistics.median(times[1:])
    print(json.dumps(medians))


@contextmanager
def api_service(data_dir: Path, database_url: str, redis_url: str, registry_port: int) -> Iterator[RunningService]:
    """The whole service on `database_url`; retention long enough that beat's purge keeps every inserted row."""
    service = start_service(
        data_dir, DATABASE_URL=database_url, REDIS_URL=redis_url, WAVE_REGISTRY_PORT=str(registry_port),
        WAVE_WEB_WORKERS=str(API_WEB_WORKERS), WAVE_LOG_LEVEL="WARNING", WAVE_REQUEST_RETENTION_DAYS="36500",
        WAVE_BUILD_RETENTION_DAYS="36500",
    )  # fmt: skip
    try:
        service.wait_ready(timeout=90)
        yield service
    finally:
        service.terminate()


def measure_api(databases: dict[str, str], tmp: Path) -> dict[str, LoadResult]:
    """POST /container-token and describe req/s on each of `databases` ({label: URL}), interleaved."""
    builder = Builder()
    try:
        with ExitStack() as stack:
            image_id = builder.busybox_image()
            posts: dict[str, dict[str, object]] = {}
            describes: dict[str, dict[str, object]] = {}
            for label, database_url in databases.items():
                data_dir = tmp / f"api-{label.replace('^', '')}"
                registry_port = free_port()
                service = stack.enter_context(api_service(data_dir, database_url, API_REDIS_URLS[label], registry_port))
                image = f"localhost:{registry_port}/library/busybox:latest"
                builder.push(image_id, image)
                body = json.dumps({"containerImage": image, "containerPlatform": "linux/amd64"})
                first = httpx.post(
                    f"{service.url}/container-token", content=body, headers={"Content-Type": "application/json"}
                )
                assert first.status_code == 200, first.text
                script = tmp / f"post-{data_dir.name}.lua"
                script.write_text(
                    f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                )
                load: dict[str, object] = {"connections": API_CONNECTIONS, "seconds": API_SECONDS}
                posts[f"{ENDPOINTS[0]}, {label}"] = {"url": f"{service.url}/container-token", "script": str(script),
                                                     **load}  # fmt: skip
                token = first.json()["containerToken"]
                describes[f"{ENDPOINTS[1]}, {label}"] = {"url": f"{service.url}/container-token/{token}", **load}
            return interleaved({**posts, **describes}, rounds=API_ROUNDS)
    finally:
        builder.cleanup()


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database("wave_bench_empty") as empty,
        throwaway_database("wave_bench_full") as full,
    ):
        for url in (empty, full):
            migrate(url, Path(tmp))
        seconds = insert_rows(full)
        print(f"inserted {REQUESTS:,} requests and the rest with SQL in {seconds:.0f} s", flush=True)
        before, after = measure(empty, Path(tmp)), measure(full, Path(tmp))
        api = measure_api({"empty": empty, "10^6": full}, Path(tmp))
    print(f"\n{'admin page':<36} {'empty':>9} {'10^6 requests':>14} {'ratio':>6}")
    for name, _ in PAGES:
        flag = "" if after[name] < TARGET_MS else f"  over {TARGET_MS:.0f} ms"
        print(f"{name:<36} {before[name]:>6.1f} ms {after[name]:>11.1f} ms {after[name] / before[name]:>6.2f}{flag}")
    slowest = max(after.values())
    verdict = "met" if slowest < TARGET_MS else "MISSED"
    print(f"slowest page at 10^6: {slowest:.0f} ms (target < {TARGET_MS:.0f} ms): {verdict}")
    print(
        f"\nAPI: {API_CONNECTIONS} connections, {API_SECONDS} s per round, {API_WEB_WORKERS} uvicorn workers, "
        f"median of {API_ROUNDS} interleaved rounds"
    )
    print(f"{'endpoint':<30} {'empty':>11} {'10^6 requests':>14} {'ratio':>6}   p99 empty / 10^6")
    for endpoint in ENDPOINTS:
        empty_load, full_load = api[f"{endpoint}, empty"], api[f"{endpoint}, 10^6"]
        ratio = full_load.requests_per_second / empty_load.requests_per_second
        errors = empty_load.errors + full_load.errors
        print(
            f"{endpoint:<30} {empty_load.requests_per_second:>5.0f} req/s {full_load.requests_per_second:>8.0f} req/s "
            f"{ratio:>6.2f}   {empty_load.p99_ms:.0f} / {full_load.p99_ms:.0f} ms"
            + (f"  errors {errors}" if errors else "")
        )
    print("the purge of 10^6 expired requests (time, peak RSS): python -m bench purge")


if __name__ == "__main__":
    if sys.argv[1:] == ["--measure"]:
        measure_here()
    else:
        main()
