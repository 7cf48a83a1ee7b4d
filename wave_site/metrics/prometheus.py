"""Prometheus metrics (`/metrics`, prometheus-client): what the web processes count as they serve, and what the
database and the broker hold, computed at scrape time.

- Counted in the web processes: requests by endpoint (URL name), method and status; pulls (manifest requests
  by tag, as the usage metrics count them); blob bytes served, from the blob store (injected layers, generated
  configs) or upstream (streamed through). uvicorn runs several workers: with WAVE_METRICS_ENABLED, settings
  point prometheus-client's multiprocess mode at `<data dir>/prometheus/<host name>` and a scrape sums every
  worker's counters (one folder per host: containers sharing the data volume may reuse process ids).
- Computed at scrape time, whichever process did the work (web, Celery workers, other machines): builds and
  mirrors by state, their durations, layer downloads by state and duration (from the database), and the depth
  of each Celery queue (LLEN on the broker's Redis).
- Read as the blob collection recorded it (listing a bucket at each scrape would cost too much): the blob
  store's size in bytes and blobs, and when it was measured; absent until the first collection.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum
from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wave_site.metrics.usage import arch_of

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "wave_http_requests", "HTTP requests answered, by endpoint (URL name), method and status.",
    ["endpoint", "method", "status"], registry=REGISTRY,
)  # fmt: skip
PULLS = Counter("wave_pulls", "Container pulls: manifest requests by tag answered.", ["arch"], registry=REGISTRY)
BLOB_BYTES = Counter(
    "wave_blob_bytes_served", "Blob bytes sent to registry clients, by source: `stored` (injected layers, "
    "generated configs, from the blob store) or `upstream` (streamed through from the source registry).",
    ["source"], registry=REGISTRY,
)  # fmt: skip
# Upper bounds (seconds) of the duration histograms: a layer download takes seconds, a build minutes.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
QUEUES = ("default", "builds", "layers")


def pull_count(platform: str) -> None:
    """One pull served (a manifest by tag) on `platform`."""
    if settings.WAVE_METRICS_ENABLED:
        PULLS.labels(arch_of(platform) or "unknown").inc()


def blob_bytes_count(*, source: str, size: int) -> None:
    """`size` blob bytes sent from `source` (`stored` or `upstream`)."""
    if settings.WAVE_METRICS_ENABLED and size > 0:
        BLOB_BYTES.labels(source).inc(size)


class StoredStateCollector(Collector):
    """Builds, mirrors and layer downloads by state and duration, and the Celery queues' depth, at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from builds.models import Build
        from requests_app.models import LayerDownload

        builds = GaugeMetricFamily(
            "wave_builds", "Stored builds and mirrors, by kind and state.", labels=["kind", "state"]
        )
        for row in Build.objects.order_by().values("kind", "state").annotate(count=Count("pk")):
            builds.add_metric([row["kind"], row["state"]], row["count"])
        yield builds
        yield _duration_family(
            "wave_build_duration_seconds", "Durations of the stored finished builds and mirrors (start to end).",
            Build.objects.all(), ["kind", "state"],
        )  # fmt: skip
        downloads = GaugeMetricFamily("wave_layer_downloads", "Stored layer downloads, by state.", labels=["state"])
        for state, count in LayerDownload.objects.order_by().values_list("state").annotate(count=Count("pk")):
            downloads.add_metric([state], count)
        yield downloads
        yield _duration_family(
            "wave_layer_download_duration_seconds", "Durations of the stored finished layer downloads.",
            LayerDownload.objects.all(), ["state"],
        )  # fmt: skip
        depth = _queue_depths()
        if depth is not None:
            queues = GaugeMetricFamily("wave_queue_depth", "Tasks waiting in each Celery queue.", labels=["queue"])
            for name, count in depth.items():
                queues.add_metric([name], count)
            yield queues
        yield from _blob_store_families()


def _blob_store_families() -> Iterator[Metric]:
    """The blob store's size as the last blob collection recorded it (wave_site.blob_gc); none before it ran."""
    from wave_site.blob_gc import blob_store_size

    size = blob_store_size()
    if size is None:
        return
    yield GaugeMetricFamily(
        "wave_blob_store_bytes", "Bytes in the blob store, as the last blob collection left it.", value=size.bytes
    )
    yield GaugeMetricFamily(
        "wave_blob_store_blobs", "Blobs in the blob store, as the last blob collection left it.", value=size.blobs
    )
    yield GaugeMetricFamily(
        "wave_blob_store_measured_timestamp_seconds", "When the last blob collection measured the blob store.",
        value=size.measured_at,
    )  # fmt: skip


def _duration_family(name: str, documentation: str, rows: QuerySet, labels: list[str]) -> Metric:
    """A gauge histogram of the finished rows' durations, grouped by `labels`: one query, counts per bucket."""
    family = GaugeHistogramMetricFamily(name, documentation, labels=labels)
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bounds = {
        f"le_{index}": Count("pk", filter=Q(took__lte=dt.timedelta(seconds=bound)))
        for index, bound in enumerate(DURATION_BUCKETS)
    }
    finished = rows.order_by().filter(started_at__isnull=False, finished_at__isnull=False).annotate(took=took)
    for row in finished.values(*labels).annotate(total=Count("pk"), seconds=Sum("took"), **bounds):
        buckets = [(str(bound), row[f"le_{index}"]) for index, bound in enumerate(DURATION_BUCKETS)]
        buckets.append(("+Inf", row["total"]))
        family.add_metric([row[label] for label in labels], buckets, gsum_value=row["seconds"].total_seconds())
    return family


def _queue_depths() -> dict[str, int] | None:
    """LLEN of each Celery queue on the broker's Redis; None with the embedded broker (no Redis)."""
    if not settings.REDIS_URL:
        return None
    from django_redis import get_redis_connection  # type: ignore[import-untyped]

    # The broker is the cache's Redis (settings.REDIS_URL): one pipelined round trip.
    pipeline = get_redis_connection("default").pipeline(transaction=False)
    for name in QUEUES:
        pipeline.llen(name)
    return dict(zip(QUEUES, (int(n) for n in pipeline.execute()), strict=True))


def metrics_text() -> bytes:
    """The exposition: this process's counters (or every web worker's, in multiprocess mode) and the stored state."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in (REQUESTS, PULLS, BLOB_BYTES):
            registry.register(collector)
    registry.register(StoredStateCollector())
    return generate_latest(registry)
