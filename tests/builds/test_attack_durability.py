"""Adversarial review of builds (issue 12): builds that must end in one final state with a reason.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from builds.models import Build
from builds.runs import build_run
from builds.services import build_reap
from requests_app.models import LayerDownload

CONTEXT_DIGEST = "sha256:" + "c" * 64


@pytest.mark.django_db
def test_attack_a_build_whose_context_download_failed_unseen_stays_pending_forever() -> None:
    """MEDIUM. A build with a `buildContext` waits for its layer: `build_run` returns without a claim while the
    blob is missing, and only `build_context_settled` - an on_commit callback of the download's settle - ever
    fails it. When that callback is lost (the process dies between the commit and the callback, the broker is
    down for its sends...), the download is FAILED for good, yet the reaper sends the build again and again
    (every 16 stale periods at most) and it stays `pending` - the pull waits, the next identical request
    joins it, nothing ever ends it. The reaper should fail a pending build whose context download is FAILED
    (or gone) with that download's reason, and any build pending past timeout + grace."""
    now = timezone.now()
    LayerDownload.objects.create(
        identity="d" * 64, url="https://example.org/context.tar.gz", gzip_digest=CONTEXT_DIGEST, gzip_size=10,
        tar_digest="sha256:" + "e" * 64, state=LayerDownload.State.FAILED, failure_reason="Layer server answered 404",
        finished_at=now,
    )  # fmt: skip
    build = Build.objects.create(
        build_id="bd-00000000000000aa_1", container_id="00000000000000aa", number=1,
        target_image="registry.example.org/wave/build:00000000000000aa", repository="registry.example.org/wave/build",
        platform="linux/amd64", container_file="FROM busybox\nCOPY . /\n", context_digest=CONTEXT_DIGEST,
        created_at=now, queued_at=now,
    )  # fmt: skip
    later = now
    for _ in range(40):  # ten hours of reaper runs, each followed by the task it sends
        later += dt.timedelta(seconds=settings.WAVE_BUILD_STALE_AFTER * 16)
        build_reap(now=later)
        build_run(build_pk=build.pk)
    build.refresh_from_db()
    assert later - now > dt.timedelta(seconds=settings.WAVE_BUILD_TIMEOUT + settings.WAVE_BUILD_GRACE)
    assert build.state == Build.State.FAILED, f"still {build.state} after {later - now}"
    assert "404" in build.failure_reason
