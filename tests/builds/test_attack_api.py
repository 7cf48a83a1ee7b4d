"""Adversarial review of builds (issue 12): the build rate limit and the log's read path.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import functools

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

import builds.logs
from builds.logs import build_log_append
from builds.models import Build
from builds.services import BuildRequest, build_create_or_join
from credentials.callers import Caller
from requests_app.ratelimit import rate_limit_acquire
from tests.conftest import PushedImage
from wave_site import blobstore
from wave_site.errors import RateLimited


@pytest.mark.django_db
def test_attack_one_ipv6_host_starts_builds_past_the_limit_from_each_address_of_its_64(
    anonymous_image: PushedImage, settings: Settings
) -> None:
    """HIGH. Builds are the most expensive thing the service does (up to WAVE_BUILD_TIMEOUT of a worker, a vfs
    storage root on its disk), yet an anonymous caller's build budget is keyed `ip:<exact address>`: any host
    with an IPv6 /64 (all of them) has 2^64 budgets. /pairing and /validate-creds already count an IPv6
    client by its /64 (credentials.throttle); `Caller.rate_limit_key` should too, for builds and pulls."""
    settings.WAVE_RATE_LIMIT_BUILDS_PER_HOUR = 1
    repository = f"{anonymous_image.registry.host}/wave/build"
    started = 0
    with pytest.raises(RateLimited):  # noqa: PT012 - the loop is the attack
        for n in range(1, 6):
            caller = Caller(ip=f"2001:db8:1:2::{n:x}")
            request = BuildRequest(
                container_file=f"FROM busybox\nRUN echo {n}\n", platform="linux/amd64", repository=repository
            )
            before_start = functools.partial(rate_limit_acquire, kind="build", key=caller.rate_limit_key)
            build_create_or_join(request=request, caller=caller, tower=None, before_start=before_start)
            started += 1
    assert started == 1


@pytest.mark.django_db
def test_attack_a_trickling_build_makes_every_log_read_fetch_thousands_of_blobs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEDIUM. The log is written as one blob per flush, and a flush happens at least every second while the
    build prints (LogSink: 1 s, or 0.5 s by its thread): a build printing a line a second for the default
    15 minutes leaves ~900-1800 chunks of a few bytes. Every GET of /logs (no authentication, no throttle) and
    every render of the build page reads all of them, one blob-store GET each - on S3, well over a thousand
    requests, tens of seconds of a web worker, per page view. Chunks should be coalesced (e.g. a flush every
    few seconds and at least some KiB per chunk once a log is long, or compacted when the build ends) and the
    page should read the tail only (builds.selectors.build_log_tail exists)."""
    now = timezone.now()
    build = Build.objects.create(
        build_id="bd-00000000000000bb_1", container_id="00000000000000bb", number=1,
        target_image="registry.example.org/wave/build:00000000000000bb", repository="registry.example.org/wave/build",
        platform="linux/amd64", container_file="FROM busybox\nRUN while true; do date; sleep 1; done\n",
        created_at=now, queued_at=now, state=Build.State.SUCCEEDED, finished_at=now,
    )  # fmt: skip
    for second in range(900):
        build_log_append(build=build, text=f"tick {second}\n")
    reads: list[str] = []
    real_read = blobstore.blob_read

    def counted_read(key: str) -> bytes:
        reads.append(key)
        return real_read(key)

    monkeypatch.setattr(builds.logs, "blob_read", counted_read)
    answer = Client().get(f"/v1alpha1/builds/{build.build_id}/logs")
    assert answer.status_code == 200
    assert answer.content.decode().endswith("tick 899\n")
    assert len(reads) <= 64, f"one /logs GET read {len(reads)} blobs for a {build.log_size}-byte log"
