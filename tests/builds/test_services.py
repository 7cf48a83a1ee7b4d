"""Build rows as durable jobs: create or join, claim, heartbeat, finish, cancel, rebuild, reap (no buildah here:
the builder's own tests and the end-to-end ones run it)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connections
from django.utils import timezone
from pytest_django.fixtures import Settings

from builds.models import Build
from builds.services import (
    BuildActive,
    BuildRequest,
    build_cancel,
    build_claim,
    build_create_or_join,
    build_finish,
    build_give_back,
    build_heartbeat,
    build_reap,
    build_rebuild,
    exists_key,
)
from credentials.callers import Caller
from tests.conftest import PushedImage
from wave_site.cache import shared_cache
from wave_site.errors import RateLimited

CALLER = Caller(ip="192.0.2.7", user_id=5, user_name="alice", email="alice@example.org")


def no_limit() -> None:
    return None


@pytest.fixture
def repository(anonymous_image: PushedImage) -> str:
    return f"{anonymous_image.registry.host}/wave/build"


def create(repository: str) -> Build:
    build = build_create_or_join(
        request=request_for(repository), caller=CALLER, tower=None, before_start=no_limit
    ).build
    assert build is not None
    return build


def request_for(repository: str, text: str = "FROM busybox\nRUN true\n") -> BuildRequest:
    return BuildRequest(container_file=text, platform="linux/amd64", repository=repository)


@pytest.mark.django_db
def test_create_then_join_then_rebuild_after_a_failure(repository: str, django_capture_on_commit_callbacks) -> None:
    request = request_for(repository)
    started: list[int] = []
    with django_capture_on_commit_callbacks() as sent:
        first = build_create_or_join(request=request, caller=CALLER, tower=None, before_start=lambda: started.append(1))
    assert (first.started, first.cached, first.build_id) == (True, False, f"bd-{request.container_id}_1")
    assert len(sent) == 1  # its task, once committed
    assert started == [1]
    build = first.build
    assert build is not None
    assert (build.target_image, build.user_name, build.user_email, build.state) == (
        request.target, "alice", "alice@example.org", "pending",
    )  # fmt: skip
    joined = build_create_or_join(request=request, caller=CALLER, tower=None, before_start=lambda: started.append(1))
    assert (joined.started, joined.build_id) == (False, first.build_id)
    assert started == [1]  # joining does not count toward the build rate
    claim = build_claim(build_pk=build.pk)
    assert claim is not None
    assert build_finish(build_pk=build.pk, claim=claim, succeeded=False, exit_status=1, reason="boom")
    again = build_create_or_join(request=request, caller=CALLER, tower=None, before_start=no_limit)
    assert (again.started, again.build_id) == (True, f"bd-{request.container_id}_2")


@pytest.mark.django_db
def test_a_target_in_the_registry_is_cached_and_needs_no_build(repository: str, anonymous_image: PushedImage) -> None:
    request = request_for(repository, f"FROM {anonymous_image.reference}\n")  # its image readable by the caller
    shared_cache().set(exists_key(request.target), True, 60)  # as after a push
    answer = build_create_or_join(request=request, caller=CALLER, tower=None, before_start=pytest.fail)
    assert (answer.cached, answer.started, answer.build_id, answer.build) == (True, False, "", None)
    assert Build.objects.count() == 0


@pytest.mark.django_db
def test_the_rate_limit_refuses_a_new_build_and_stores_nothing(repository: str) -> None:
    def refuse() -> None:
        raise RateLimited("Request exceeded build rate limit of 1 per hour - retry in 10 seconds", retry_after=10)

    with pytest.raises(RateLimited):
        build_create_or_join(request=request_for(repository), caller=CALLER, tower=None, before_start=refuse)
    assert Build.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_requests_start_one_build(repository: str) -> None:
    request = request_for(repository, "FROM busybox\nRUN echo concurrent\n")
    barrier = threading.Barrier(5)
    answers: list[str] = []

    def ask() -> None:
        try:
            barrier.wait()
            answers.append(build_create_or_join(request=request, caller=CALLER, tower=None, before_start=no_limit
                                                ).build_id)  # fmt: skip
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 5
    assert set(answers) == {f"bd-{request.container_id}_1"}
    assert Build.objects.count() == 1


@pytest.mark.django_db
def test_claim_is_a_compare_and_set(repository: str) -> None:
    build = build_create_or_join(
        request=request_for(repository), caller=CALLER, tower=None, before_start=no_limit
    ).build
    assert build is not None
    claim = build_claim(build_pk=build.pk)
    assert claim is not None
    assert build_claim(build_pk=build.pk) is None  # a redelivered task does nothing
    assert build_heartbeat(build_pk=build.pk, claim=claim)
    assert not build_heartbeat(build_pk=build.pk, claim="someone-else")
    assert not build_finish(build_pk=build.pk, claim="someone-else", succeeded=True, digest="sha256:" + "1" * 64)
    assert build_finish(build_pk=build.pk, claim=claim, succeeded=True, digest="sha256:" + "1" * 64, exit_status=0)
    build.refresh_from_db()
    assert (build.state, build.digest, build.attempts) == ("succeeded", "sha256:" + "1" * 64, 1)
    assert shared_cache().get(exists_key(build.target_image)) is True
    assert not build_finish(build_pk=build.pk, claim=claim, succeeded=False, reason="late")  # settled once


@pytest.mark.django_db
def test_cancel_stops_the_heartbeat_and_rebuild_needs_no_active_build(repository: str) -> None:
    build = build_create_or_join(
        request=request_for(repository), caller=CALLER, tower=None, before_start=no_limit
    ).build
    assert build is not None
    claim = build_claim(build_pk=build.pk)
    assert claim is not None
    with pytest.raises(BuildActive):
        build_rebuild(build=build)
    assert build_cancel(build=build, by="admin")
    assert (build.state, build.failure_reason) == ("cancelled", "Build cancelled by admin")
    assert not build_heartbeat(build_pk=build.pk, claim=claim)  # the worker learns it and kills the build
    assert not build_finish(build_pk=build.pk, claim=claim, succeeded=True)
    assert not build_cancel(build=build, by="admin")
    rebuilt = build_rebuild(build=build)
    assert (rebuilt.number, rebuilt.state, rebuilt.user_name) == (2, "pending", "alice")


@pytest.mark.django_db
def test_a_stopping_worker_gives_its_build_back(repository: str) -> None:
    build = build_create_or_join(
        request=request_for(repository), caller=CALLER, tower=None, before_start=no_limit
    ).build
    assert build is not None
    claim = build_claim(build_pk=build.pk)
    assert claim is not None
    assert build_give_back(build_pk=build.pk, claim=claim)
    build.refresh_from_db()
    assert (build.state, build.attempts, build.claimed_by) == ("pending", 0, "")


@pytest.mark.django_db
def test_the_reaper_fails_silent_builds_and_resends_forgotten_ones(
    repository: str, settings: Settings, django_capture_on_commit_callbacks
) -> None:
    running = build_create_or_join(request=request_for(repository, "FROM a\n"), caller=CALLER, tower=None,
                                   before_start=no_limit).build  # fmt: skip
    pending = build_create_or_join(request=request_for(repository, "FROM b\n"), caller=CALLER, tower=None,
                                   before_start=no_limit).build  # fmt: skip
    assert running is not None
    assert pending is not None
    claim = build_claim(build_pk=running.pk)
    assert claim is not None
    now = timezone.now()
    assert build_reap(now=now).failed == 0  # heartbeats are fresh
    later = now + dt.timedelta(seconds=settings.WAVE_BUILD_STALE_AFTER + 1)
    with django_capture_on_commit_callbacks() as sent:
        reaped = build_reap(now=later)
    assert (reaped.failed, reaped.resent) == (1, 1)
    assert len(sent) == 1  # the pending one's task, sent again
    running.refresh_from_db()
    assert (running.state, running.failure_reason) == ("failed", "build worker lost")
    assert build_reap(now=later).resent == 0  # the next send waits twice as long


@pytest.mark.django_db
def test_a_build_past_timeout_and_grace_is_lost_even_while_beating(repository: str, settings: Settings) -> None:
    build = build_create_or_join(
        request=request_for(repository), caller=CALLER, tower=None, before_start=no_limit
    ).build
    assert build is not None
    claim = build_claim(build_pk=build.pk)
    assert claim is not None
    later = timezone.now() + dt.timedelta(seconds=settings.WAVE_BUILD_TIMEOUT + settings.WAVE_BUILD_GRACE + 1)
    Build.objects.filter(pk=build.pk).update(heartbeat_at=later)  # a worker stuck beating
    assert build_reap(now=later).failed == 1
