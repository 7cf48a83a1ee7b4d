"""The build page, server-side: the state, inputs and the log so far, every text escaped; a 404 page for
unknown ids. (tests/browser/test_build_page.py follows a running build in a real browser.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from builds.logs import build_log_append
from tests.builds.test_api import BUILD_ID, CONTAINER_ID, DIGEST, make_build

pytestmark = pytest.mark.django_db

PAGE = f"/view/builds/{BUILD_ID}"
HOSTILE = "<script>window.pwned = 1</script><img src=x onerror=alert(1)>"


def page(client: Client, url: str = PAGE, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status
    assert response["Content-Type"] == "text/html; charset=utf-8"
    return response.content.decode()


def scripts(html: str) -> list[str]:
    return re.findall(r"<script[^>]*>", html)


def test_a_running_build_shows_its_log_so_far_and_follows_it(client: Client) -> None:
    build = make_build("running")
    build_log_append(build=build, text="STEP 1/2: FROM busybox\n")
    html = page(client)
    assert f"Build <code>{BUILD_ID}</code>" in html
    assert '<span id="state" class="state state-running">running</span>' in html
    assert f"registry.example.org/wave/build:{CONTAINER_ID}" in html
    assert "linux/amd64" in html
    assert "2026-11-27 10:00:02 UTC" in html  # started
    assert '<pre id="log">\nSTEP 1/2: FROM busybox\n</pre>' in html
    assert "FROM busybox\nRUN echo hello &gt; /hello.txt\n</pre>" in html  # the Containerfile
    assert 'data-active="true"' in html
    assert f'data-status-url="/v1alpha1/builds/{BUILD_ID}/status"' in html
    assert f'data-logs-url="/v1alpha1/builds/{BUILD_ID}/logs"' in html
    assert '<noscript><meta http-equiv="refresh" content="10"></noscript>' in html  # follows without JS too
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_every_text_is_escaped(client: Client) -> None:
    build = make_build("failed", container_file=f"FROM busybox\nRUN echo '{HOSTILE}'\n", failure_reason=HOSTILE)
    build_log_append(build=build, text=f"{HOSTILE}\n</pre><script>window.pwned = 2</script>\n")
    html = page(client, f"/view/builds/{build.build_id}")
    assert "<script>window.pwned" not in html
    assert "<img" not in html
    assert "</pre><script>" not in html
    assert scripts(html) == ["<script>"]  # the page's own, only
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("&lt;script&gt;window.pwned = 1") == 3  # Containerfile, reason and log


def test_a_succeeded_build_shows_its_result_and_no_longer_refreshes(client: Client) -> None:
    build = make_build("succeeded")
    build_log_append(build=build, text="pushed\n")
    html = page(client)
    assert '<span id="state" class="state state-succeeded">succeeded</span>' in html
    assert f'<code id="digest">{DIGEST}</code>' in html
    assert '<dd id="duration">42.3 s</dd>' in html
    assert '<dd id="finished">2026-11-27 10:00:44 UTC</dd>' in html
    assert '<dd id="exit-status">0</dd>' in html
    assert 'data-active="false"' in html
    assert "http-equiv" not in html
    assert "<div hidden><dt>Reason</dt>" in html


def test_a_failed_build_shows_why(client: Client) -> None:
    make_build("failed")
    html = page(client)
    assert '<dd id="reason" class="reason">Build failed: RUN exited with status 1</dd>' in html
    assert "<div hidden><dt>Digest</dt>" in html


def test_a_queued_build_says_there_is_no_output_yet(client: Client) -> None:
    make_build("pending", conda_file="name: samtools\n", spack_file="spack:\n  specs: [bwa]\n")
    html = page(client)
    assert '<span id="state" class="state state-pending">pending</span>' in html
    assert '<p id="log-empty" class="note" >No output yet.</p>' in html
    assert "<h2>Conda environment</h2>\n<pre>\nname: samtools\n</pre>" in html
    assert "<h2>Spack recipe</h2>" in html
    assert "<div hidden><dt>Started</dt>" in html


@pytest.mark.parametrize("build_id", [f"bd-{CONTAINER_ID}_2", "<script>alert(1)</script>", "bd-x"])
def test_an_unknown_build_is_a_404_page(client: Client, build_id: str, django_assert_max_num_queries: Any) -> None:
    make_build("succeeded")
    with django_assert_max_num_queries(1):
        html = page(client, f"/view/builds/{build_id}", status=404)
    assert "Unknown build" in html
    assert "<script>alert" not in html
    assert scripts(html) == []
    assert "There is no build <code>" in html


def test_the_page_only_answers_reads(client: Client) -> None:
    make_build("succeeded")
    assert client.head(PAGE).status_code == 200
    assert client.post(PAGE).status_code == 405
