"""Build benchmarks (issue 12), measured side by side in one run.

- One build through the service (POST /v1alpha2/container with a containerFile, until the build's status says
  it succeeded, i.e. its image is pushed) vs `buildah bud` + `buildah push` of the same kind of Containerfile by
  hand, in a fresh storage root with the backend's flags (vfs, chroot isolation, docker format). FROM a busybox
  image in a local registry, one RUN step writing a value unique to the run (nothing cached); no cache
  repository on either side. The service's time includes the removal of its work dir (it finishes the build
  after); the by-hand time stops once pushed. Interleaved rounds after one warm-up each, medians.
  Target <= 1.2x.
- The latency of a cached request: POST of a Containerfile whose target exists (`cached: true`), sequentially
  on one connection, median and p95 (target < 50 ms median); then a few with the service's memory of existing
  targets dropped first, so that each asks the registry (a HEAD).
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from bench.service import running_service
from tests.support.images import Builder
from tests.support.registry import ANONYMOUS, start_registry
from tests.support.service import RunningService

BUILD_RATIO_TARGET = 1.2
CACHED_MEDIAN_TARGET_MS = 50.0
POLL_SECONDS = 0.02
REDIS_URL = "redis://127.0.0.1:6379/13"  # bench.service's


def containerfile(base: str, value: str) -> str:
    return f"FROM {base}\nRUN echo {value} > /bench.txt && cat /bench.txt\n"


@dataclass(frozen=True)
class ServiceBuild:
    build_id: str
    total: float  # from the POST until the status said succeeded
    answer: float  # the POST's answer
    pickup: float  # from the POST until a worker started it (startTime)
    running: float  # startTime until finished (the status' duration)


def _instant(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def build_through_service(
    client: httpx.Client, service: RunningService, text: str, *, timeout: float = 300
) -> ServiceBuild:
    body = {"containerFile": base64.b64encode(text.encode()).decode(), "containerPlatform": "linux/amd64"}
    posted_at = time.time()
    started = time.perf_counter()
    response = client.post(f"{service.url}/v1alpha2/container", json=body)
    answered = time.perf_counter() - started
    response.raise_for_status()
    created = response.json()
    if created.get("cached"):
        raise RuntimeError(f"the build of a fresh Containerfile was answered cached: {created}")
    status_url = f"{service.url}/v1alpha1/builds/{created['buildId']}/status"
    while True:
        status = client.get(status_url).json()
        if status["status"] == "COMPLETED":
            total = time.perf_counter() - started
            break
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"build {created['buildId']} not finished after {timeout} s")
        time.sleep(POLL_SECONDS)
    if not status.get("succeeded"):
        log = client.get(f"{service.url}/v1alpha1/builds/{created['buildId']}/logs").text
        raise RuntimeError(f"build {created['buildId']} failed:\n{log[-3000:]}")
    return ServiceBuild(
        build_id=created["buildId"], total=total, answer=answered,
        pickup=_instant(status["startTime"]) - posted_at, running=float(status["duration"]),
    )  # fmt: skip


@dataclass(frozen=True)
class HandBuild:
    total: float
    bud: float
    push: float


def build_by_hand(text: str, target: str, *, scratch: Path) -> HandBuild:
    """`buildah bud` + `buildah push` as the backend runs them (vfs, chroot, docker format), fresh storage root."""
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="wave-bench-byhand-", dir=scratch))
    buildah = ["buildah", "--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs"]
    try:
        (root / "context").mkdir()
        (root / "Containerfile").write_text(text)
        subprocess.run(
            [*buildah, "bud", "--isolation", "chroot", "--platform", "linux/amd64", "--format", "docker",
             "--tls-verify=false", "-f", str(root / "Containerfile"), "-t", target, str(root / "context")],
            check=True, capture_output=True,
        )  # fmt: skip
        built = time.perf_counter()
        subprocess.run(
            [*buildah, "push", "--tls-verify=false", "--digestfile", str(root / "digest"), target, f"docker://{target}"],
            check=True, capture_output=True,
        )  # fmt: skip
        pushed = time.perf_counter()
        if not (root / "digest").read_text().startswith("sha256:"):
            raise RuntimeError(f"buildah push of {target} wrote no digest")
    finally:
        subprocess.run([*buildah, "rm", "--all"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
    return HandBuild(total=pushed - started, bud=built - started, push=pushed - built)


def cached_latencies(
    client: httpx.Client, service: RunningService, text: str, *, requests: int, forget: bool = False
) -> list[float]:
    """Seconds of each sequential POST of `text`, whose target exists; each must answer `cached: true`.
    `forget`: the service's memory that the target exists is dropped first, so that it asks the registry."""
    body = {"containerFile": base64.b64encode(text.encode()).decode(), "containerPlatform": "linux/amd64"}
    times = []
    store = redis.Redis.from_url(REDIS_URL)
    for _ in range(requests):
        if forget and not store.delete(*store.keys("*wave:build:exists:*")):
            raise RuntimeError("the service's memory of existing targets was not found in Redis")
        started = time.perf_counter()
        response = client.post(f"{service.url}/v1alpha2/container", json=body)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
        if response.json().get("cached") is not True:
            raise RuntimeError(f"a request for an existing target was not answered cached: {response.text}")
    return times


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(*, rounds: int = 11, cached_requests: int = 200, head_requests: int = 20) -> None:
    builder = Builder()
    registry = start_registry(ANONYMOUS)
    service_runs: list[ServiceBuild] = []
    hand_runs: list[HandBuild] = []
    try:
        base = f"{registry.host}/bench/busybox:latest"
        builder.push(builder.busybox_image(), base)
        with (
            tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
            running_service(
                Path(tmp), WAVE_SSRF_ALLOW="127.0.0.1", WAVE_BUILD_REPO=f"{registry.host}/wave/build"
            ) as service,
            httpx.Client(timeout=60) as client,
        ):
            # A first build of each side, not counted: the worker's and buildah's first start read cold files.
            build_through_service(client, service, containerfile(base, f"warm-{uuid.uuid4().hex}"))
            build_by_hand(containerfile(base, f"warm-{uuid.uuid4().hex}"), f"{registry.host}/bench/byhand:warm",
                          scratch=Path(tmp))  # fmt: skip
            last = ""
            for index in range(rounds):  # interleaved, so that drift affects both sides alike
                last = containerfile(base, f"svc-{uuid.uuid4().hex}")
                service_runs.append(build_through_service(client, service, last))
                by_hand = containerfile(base, f"hand-{uuid.uuid4().hex}")
                hand_runs.append(build_by_hand(by_hand, f"{registry.host}/bench/byhand:{index}", scratch=Path(tmp)))
            cached = cached_latencies(client, service, last, requests=cached_requests)
            headed = cached_latencies(client, service, last, requests=head_requests, forget=True)
    finally:
        registry.stop()
        builder.cleanup()

    ours = _median([run.total for run in service_runs])
    theirs = _median([run.total for run in hand_runs])
    print(f"\none build FROM busybox (local registry) with a unique RUN step, pushed; median of {rounds}, interleaved")
    print(f"{'through the service (POST -> pushed)':<40} {ours:6.2f} s   "
          f"({', '.join(f'{run.total:.2f}' for run in service_runs)})")  # fmt: skip
    answer = _median([r.answer for r in service_runs])
    pickup = _median([r.pickup for r in service_runs])
    running = _median([r.running for r in service_runs])
    seen = _median([r.total - r.pickup - r.running for r in service_runs])
    print(f"{'  POST answered':<40} {answer * 1000:6.0f} ms")
    print(f"{'  POST -> a worker started it':<40} {pickup * 1000:6.0f} ms")
    print(f"{'  started -> finished (the worker)':<40} {running * 1000:6.0f} ms")
    print(f"{'  finished -> seen by a status poll':<40} {seen * 1000:6.0f} ms   (every {POLL_SECONDS * 1000:.0f} ms)")
    print(f"{'buildah bud + push by hand':<40} {theirs:6.2f} s   "
          f"({', '.join(f'{run.total:.2f}' for run in hand_runs)})")  # fmt: skip
    print(f"{'  bud':<40} {_median([r.bud for r in hand_runs]) * 1000:6.0f} ms")
    print(f"{'  push':<40} {_median([r.push for r in hand_runs]) * 1000:6.0f} ms")
    print(f"ratio service / by hand: {ours / theirs:.2f} (target <= {BUILD_RATIO_TARGET})")
    median_ms, p95_ms = _median(cached) * 1000, _p95(cached) * 1000
    print(f"\ncached request (target exists -> cached: true), {cached_requests} sequential POSTs on one connection")
    print(f"{'median':<40} {median_ms:6.1f} ms")
    print(f"{'p95':<40} {p95_ms:6.1f} ms")
    print(f"{f'median, existence not remembered ({head_requests}x)':<40} {_median(headed) * 1000:6.1f} ms   "
          f"(the registry HEAD each time; p95 {_p95(headed) * 1000:.1f} ms)")  # fmt: skip
    verdict = "meets" if median_ms < CACHED_MEDIAN_TARGET_MS else "misses"
    print(f"target median < {CACHED_MEDIAN_TARGET_MS:.0f} ms: {verdict}")
