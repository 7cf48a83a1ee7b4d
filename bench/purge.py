"""The purge at scale (issue 14): 10^6 expired requests, inserted with SQL as weeks of use would leave them
(a tenth with two layers, one of them fetched by a shared layer download), beside live requests, in a throwaway
Postgres database; `manage.py purge` in a process of its own, its wall time and peak RSS (the child's own
rusage). Side by side on a smaller sample, the same purge and the ORM delete it replaced (scaled linearly to
10^6 in the printout, as an estimate). Targets: under 60 s and under 300 MB at 10^6.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.service import REPO, service_environment, throwaway_database

EXPIRED = 1_000_000
SAMPLE = 100_000
LIVE = 20_000
DOWNLOADS = 2_000  # all used by live requests
UNUSED_DOWNLOADS = 500  # finished long ago, used by no request: purged
TIME_TARGET_S = 60.0
RSS_TARGET_MB = 300.0

# Expired 8 to 40 days ago (past the 7-day retention), created 36 h before expiry; ids in creation order.
INSERT_REQUESTS = """
INSERT INTO requests_app_containerrequest (token, api_version, source_image, target_image, platform,
    container_config, fingerprint, client_timestamp, client_ip, tower_endpoint, user_name, user_email, build_id,
    source_digest, wave_digest, generated_digests, created_at, expires_at)
SELECT lpad(to_hex(%(offset)s + g), 12, '0'), 'v2', 'docker.io/library/ubuntu:22.04',
    'wave.example.org/wt/' || lpad(to_hex(%(offset)s + g), 12, '0') || '/library/ubuntu:22.04', 'linux/amd64',
    '{"env": ["A=1"], "entrypoint": ["/bin/sh"]}', md5(g::text), '2026-10-01T00:00:00Z', '10.0.0.1', '', '', '', '',
    'sha256:' || md5(g::text) || md5(g::text), 'sha256:' || md5((-g)::text) || md5((-g)::text),
    ('["sha256:' || md5(g::text) || md5(g::text) || '"]')::jsonb,
    expiry - interval '36 hours', expiry
FROM (SELECT g, CASE WHEN %(live)s THEN now() + interval '30 hours' * g / %(count)s
                     ELSE now() - interval '40 days' + interval '32 days' * g / %(count)s END AS expiry
      FROM generate_series(1, %(count)s) g) rows
"""
INSERT_DOWNLOADS = """
INSERT INTO requests_app_layerdownload (identity, url, gzip_digest, gzip_size, tar_digest, state, attempts,
    claimed_by, created_at, queued_at, started_at, finished_at, failure_reason, blob_key, client, resends)
SELECT encode(sha256(gen_random_uuid()::text::bytea), 'hex'), 'https://layers.example.org/' || g || '.tar.gz',
    'sha256:' || md5(g::text) || md5(g::text), 4096, 'sha256:' || md5(g::text), 'ready', 1, '',
    now() - interval '40 days', now() - interval '40 days', now() - interval '40 days', now() - interval '40 days',
    '', 'blobs/sha256/' || md5(g::text), 'ip:10.0.0.1', 0
FROM generate_series(%(first)s, %(first)s + %(count)s - 1) g
"""
# A tenth of the new requests: a data: layer and an http layer fetched by one of the downloads.
INSERT_LAYERS = """
INSERT INTO requests_app_injectedlayer (request_id, position, kind, url, gzip_digest, gzip_size, tar_digest, state,
    failure_reason, blob_key, finished_at, download_id)
SELECT r.id, p, CASE WHEN p = 0 THEN 'data' ELSE 'http' END, CASE WHEN p = 0 THEN '' ELSE 'https://l/' END,
    'sha256:' || md5(r.id::text), 4096, 'sha256:' || md5(r.id::text), 'ready', '', '', r.created_at,
    CASE WHEN p = 0 THEN NULL ELSE (SELECT min(id) FROM requests_app_layerdownload) + r.id %% %(downloads)s END
FROM requests_app_containerrequest r CROSS JOIN generate_series(0, 1) p
WHERE r.id > %(after)s AND r.id %% %(every)s = 0
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    output: str


def _manage(environment: dict[str, str], *args: str) -> Run:
    """`manage.py <args>` in a child process; its wall time and its own peak RSS (wait4's rusage)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{output}")
    return Run(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024, output=output.strip())


def _insert(database_url: str, *, count: int, live: bool = False, layers_every: int = 10) -> None:
    """`count` requests (layers for one in `layers_every`); with expired ones, 500 finished downloads none uses."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        after = connection.execute("SELECT coalesce(max(id), 0) FROM requests_app_containerrequest").fetchone()
        assert after is not None
        connection.execute(INSERT_REQUESTS, {"offset": after[0] + 1_000_000_000, "count": count, "live": live})
        connection.execute(INSERT_LAYERS, {"after": after[0], "every": layers_every, "downloads": DOWNLOADS})
        if not live:
            connection.execute(INSERT_DOWNLOADS, {"first": 1_000_000 + after[0], "count": UNUSED_DOWNLOADS})
        connection.execute("ANALYZE")


def _remaining(database_url: str) -> tuple[int, int, int]:
    with psycopg.connect(database_url) as connection:
        row = connection.execute(
            "SELECT (SELECT count(*) FROM requests_app_containerrequest WHERE expires_at < now() - interval '7 days'),"
            " (SELECT count(*) FROM requests_app_containerrequest),"
            " (SELECT count(*) FROM requests_app_injectedlayer l WHERE NOT EXISTS"
            "   (SELECT 1 FROM requests_app_containerrequest r WHERE r.id = l.request_id))"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


ORM_DELETE = (
    "import datetime as dt; from django.utils import timezone; from requests_app.models import ContainerRequest; "
    "print(ContainerRequest.objects.filter(expires_at__lt=timezone.now() - dt.timedelta(days=7)).delete()[0])"
)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="wave-bench-purge-") as tmp, throwaway_database("wave_bench") as url:
        environment = service_environment(
            DATABASE_URL=url, REDIS_URL="redis://127.0.0.1:6379/13", WAVE_DATA_DIR=str(Path(tmp) / "data"),
            WAVE_LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="wave_site.settings",
        )  # fmt: skip
        _manage(environment, "migrate", "--no-input", "-v", "0")
        idle = _manage(environment, "purge", "--dry-run")  # a process that loads Django and deletes nothing
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute(INSERT_DOWNLOADS, {"first": 1, "count": DOWNLOADS})
        _insert(url, count=LIVE, live=True, layers_every=1)
        print(
            f"  {LIVE} live requests (two layers each); manage.py idle: {idle.peak_rss_mb:.0f} MB peak RSS", flush=True
        )

        _insert(url, count=SAMPLE)
        old = _manage(environment, "shell", "-c", ORM_DELETE)
        _insert(url, count=SAMPLE)
        new_sample = _manage(environment, "purge")
        assert _remaining(url) == (0, LIVE, 0), _remaining(url)

        started = time.perf_counter()
        _insert(url, count=EXPIRED)
        print(f"  {EXPIRED} expired requests inserted in {time.perf_counter() - started:.0f} s", flush=True)
        dry = _manage(environment, "purge", "--dry-run")
        print("  dry run: " + ", ".join(dry.output.splitlines()) + f" ({dry.seconds:.1f} s)", flush=True)
        new = _manage(environment, "purge")
        assert _remaining(url) == (0, LIVE, 0), _remaining(url)

    scale = EXPIRED / SAMPLE
    print(f"  {'':<34} {'requests':>9} {'time':>8} {'peak RSS':>9}")
    print(f"  {'ORM delete (before)':<34} {SAMPLE:>9} {old.seconds:>7.1f}s {old.peak_rss_mb:>7.0f}MB")
    print(f"  {'  scaled to 10^6 (estimate)':<34} {EXPIRED:>9} {old.seconds * scale:>7.0f}s "
          f"{idle.peak_rss_mb + (old.peak_rss_mb - idle.peak_rss_mb) * scale:>7.0f}MB")  # fmt: skip
    print(
        f"  {'manage.py purge (batches)':<34} {SAMPLE:>9} {new_sample.seconds:>7.1f}s {new_sample.peak_rss_mb:>7.0f}MB"
    )
    print(f"  {'manage.py purge (batches)':<34} {EXPIRED:>9} {new.seconds:>7.1f}s {new.peak_rss_mb:>7.0f}MB")
    print("  deleted: " + ", ".join(new.output.splitlines()))
    verdict = "met" if new.seconds < TIME_TARGET_S and new.peak_rss_mb < RSS_TARGET_MB else "MISSED"
    print(f"  targets < {TIME_TARGET_S:.0f} s and < {RSS_TARGET_MB:.0f} MB at 10^6: {verdict}")
