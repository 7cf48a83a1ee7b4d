"""The builds admin: list columns, filters and search, the read-only build page with the end of its log,
cancel (active builds) and rebuild (finished ones) through the real services, each saying what happened."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from builds.admin import LOG_TAIL_BYTES
from builds.logs import build_log_append
from builds.models import Build
from credentials.models import TowerAuth
from tests.builds.test_api import make_build

pytestmark = pytest.mark.django_db

LIST = "/admin/builds/build/"
STATES = ["pending", "running", "succeeded", "failed", "cancelled"]


@pytest.fixture
def operator(client: Client) -> Client:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    return client


def one_of_each() -> dict[str, Build]:
    """A build in every state, each of its own target; two callers: a Tower user and an anonymous address."""
    builds = {}
    for index, state in enumerate(STATES):
        caller = {"user_name": "alice-tower"} if index % 2 else {"client_ip": "198.51.100.9"}
        builds[state] = make_build(
            state, container_file=f"FROM busybox\nRUN echo {state}\n",
            created_at=timezone.now() - dt.timedelta(days=40 * index), **caller,
        )  # fmt: skip
    return builds


def page_of(build: Build) -> str:
    return f"{LIST}{build.pk}/change/"


def column_headers(page: str) -> list[str]:
    return re.findall(r'<th scope="col" class="(?:sortable )?column-([a-z_]+)', page)


def listed(page: str) -> set[str]:
    return set(re.findall(r">(bd-[0-9a-f]{16}_[0-9]+)</a>", page))


def cell(page: str, build_id: str, column: str) -> str:
    (row,) = [row for row in page.split("<tr") if f">{build_id}</a>" in row]
    found = re.search(rf'<td class="field-{column}">(.*?)</td>', row, re.S)
    assert found is not None, (build_id, column)
    return found.group(1)


def test_the_list_shows_id_state_duration_target_caller_and_creation(operator: Client) -> None:
    builds = one_of_each()
    page = operator.get(LIST).content.decode()
    assert column_headers(page) == ["build_id", "state_badge", "duration_shown", "target", "caller", "created"]
    assert listed(page) == {build.build_id for build in builds.values()}
    succeeded, pending = builds["succeeded"].build_id, builds["pending"].build_id
    assert cell(page, succeeded, "state_badge") == (
        '<span class="wave-build-state wave-build-state-succeeded">succeeded</span>'
    )
    assert cell(page, succeeded, "duration_shown") == "42.3 s"
    assert cell(page, pending, "duration_shown") == "-"
    target = builds["succeeded"].target_image
    assert cell(page, succeeded, "target") == f'<span class="wave-truncate" title="{target}">{target}</span>'
    assert cell(page, builds["running"].build_id, "caller") == (
        '<span class="wave-truncate wave-short" title="alice-tower">alice-tower</span>'
    )
    assert cell(page, pending, "caller") == (
        '<span class="wave-truncate wave-short" title="198.51.100.9">198.51.100.9</span>'
    )
    assert ".wave-build-state-cancelled" in page  # the badges' styles come with the list


@pytest.mark.parametrize("state", STATES)
def test_the_state_filter(operator: Client, state: str) -> None:
    builds = one_of_each()
    page = operator.get(LIST, {"state__exact": state}).content.decode()
    assert listed(page) == {builds[state].build_id}


def test_the_date_drill_down(operator: Client) -> None:
    builds = one_of_each()
    created = builds["failed"].created_at
    page = operator.get(LIST, {"created_at__year": created.year, "created_at__month": created.month}).content.decode()
    assert builds["failed"].build_id in listed(page)
    assert builds["pending"].build_id not in listed(page)  # 120 days apart
    assert '<nav class="toplinks">' in operator.get(LIST).content.decode()  # the date hierarchy bar is there


def test_search_by_build_id_target_prefix_or_user_name(operator: Client) -> None:
    builds = one_of_each()
    failed, running = builds["failed"], builds["running"]

    def found(query: str) -> set[str]:
        page = operator.get(LIST, {"q": query}).content.decode()
        return {state for state, build in builds.items() if build.build_id in listed(page)}

    assert found(failed.build_id) == {"failed"}  # a build id, exactly
    assert found(failed.build_id[:-2]) == set()  # not a prefix of one
    assert found(running.target_image[:-10]) == {"running"}  # the start of a target
    assert found("wave/build") == set()  # not the middle of one
    assert found("alice-TOWER") == {"running", "failed"}  # a user name, any case


def test_malformed_filters_redirect_with_the_error_flag(operator: Client) -> None:
    operator.raise_request_exception = False
    one_of_each()
    for query in ("created_at__year=99999999999999999999", "created_at__year=99999", "state__exact=%00", "q=%00"):
        response = operator.get(f"{LIST}?{query}")
        assert response.status_code == 302, query
        assert response["Location"] == f"{LIST}?e=1"


def test_the_build_page_is_read_only_with_the_log_escaped(operator: Client, settings: Any) -> None:
    settings.WAVE_SERVER_URL = "http://wave.test"
    auth = TowerAuth.objects.create(key="k" * 64, endpoint="https://tower.example.org/api", user_name="alice-tower")
    auth.set_tokens(access_token="secret-access-token", refresh_token="secret-refresh-token")
    auth.save()
    build = make_build("failed", user_name="alice-tower", user_email="alice@example.org", tower_auth=auth,
                       tower_endpoint="https://tower.example.org/api")  # fmt: skip
    build_log_append(build=build, text="STEP 1/2: FROM busybox\n<script>alert(1)</script>\n")
    page = operator.get(page_of(build)).content.decode()
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in page, button
    assert '<pre class="wave-build-log">STEP 1/2: FROM busybox\n&lt;script&gt;alert(1)&lt;/script&gt;\n</pre>' in page
    assert "<script>alert(1)" not in page
    assert "Build failed: RUN exited with status 1" in page
    assert f'<a href="http://wave.test/view/builds/{build.build_id}">' in page
    assert f'<a href="/v1alpha1/builds/{build.build_id}/logs">whole log (text)</a>' in page
    assert "alice-tower at https://tower.example.org/api" in page  # the Tower session, by name only
    assert "secret-access-token" not in page
    assert "secret-refresh-token" not in page
    assert auth.access_token_sealed not in page


def test_the_build_page_shows_only_the_end_of_a_long_log(operator: Client, settings: Any) -> None:
    settings.WAVE_BUILD_LOG_MAX_BYTES = 4 * LOG_TAIL_BYTES
    build = make_build("running")
    line = "x" * 99 + "\n"
    for number in range(6):
        build_log_append(build=build, text=f"chunk {number}\n" + line * (LOG_TAIL_BYTES // 300))
    build_log_append(build=build, text="the last line\n")
    page = operator.get(page_of(build)).content.decode()
    log = page[page.index('<pre class="wave-build-log">') :]
    log = log[: log.index("</pre>")]
    assert "chunk 0" not in log
    assert "chunk 5" in log
    assert log.endswith("the last line\n")
    shown = len(log) - len('<pre class="wave-build-log">')
    assert LOG_TAIL_BYTES - 200 <= shown <= LOG_TAIL_BYTES + 100
    omitted = re.search(r"\[([0-9]+) earlier bytes not shown\]\n", log)
    assert omitted is not None
    assert int(omitted.group(1)) == build.log_size - (shown - len(omitted.group(0)))


def test_an_active_build_has_a_cancel_button_and_no_rebuild(operator: Client) -> None:
    build = make_build("running")
    page = operator.get(page_of(build)).content.decode()
    assert f'<form id="wave-build-cancel-form" method="post" action="{page_of(build)[:-7]}cancel/">' in page
    assert ">Cancel build</button>" in page
    assert "wave-build-rebuild-form" not in page


def test_a_finished_build_has_a_rebuild_button_and_no_cancel(operator: Client) -> None:
    build = make_build("succeeded")
    page = operator.get(page_of(build)).content.decode()
    assert f'<form id="wave-build-rebuild-form" method="post" action="{page_of(build)[:-7]}rebuild/">' in page
    assert ">Rebuild</button>" in page
    assert "wave-build-cancel-form" not in page


def test_the_cancel_button_cancels_and_says_so(operator: Client) -> None:
    build = make_build("running")
    response = operator.post(f"{LIST}{build.pk}/cancel/", follow=True)
    assert response.redirect_chain == [(page_of(build), 302)]
    build.refresh_from_db()
    assert build.state == "cancelled"
    assert build.failure_reason == "Build cancelled by an operator"  # public: no operator's login name
    assert build.finished_at is not None
    page = response.content.decode()
    assert f"Cancelled {build.build_id}: a running build is stopped by its worker within seconds." in page
    assert "wave-build-cancel-form" not in page
    entry = LogEntry.objects.get(object_id=str(build.pk))
    assert (entry.user.get_username(), entry.change_message) == ("ops", "Cancelled the build.")


def test_cancelling_a_finished_build_changes_nothing(operator: Client) -> None:
    build = make_build("succeeded")
    response = operator.post(f"{LIST}{build.pk}/cancel/", follow=True)
    assert f"Not cancelled (already finished): {build.build_id}." in response.content.decode()
    build.refresh_from_db()
    assert (build.state, build.failure_reason) == ("succeeded", "")
    assert not LogEntry.objects.exists()


def test_the_cancel_action_cancels_the_active_builds_of_the_selection(operator: Client) -> None:
    builds = one_of_each()
    selection = [builds[state].pk for state in ("pending", "running", "succeeded")]
    response = operator.post(LIST, {"action": "cancel", "_selected_action": selection}, follow=True)
    page = response.content.decode()
    states = {state: Build.objects.get(pk=build.pk).state for state, build in builds.items()}
    assert states == {"pending": "cancelled", "running": "cancelled", "succeeded": "succeeded", "failed": "failed",
                      "cancelled": "cancelled"}  # fmt: skip
    cancelled = sorted([builds["pending"].build_id, builds["running"].build_id], key=selection_order(builds))
    assert f"Cancelled {', '.join(cancelled)}: a running build" in page
    assert f"Not cancelled (already finished): {builds['succeeded'].build_id}." in page


def selection_order(builds: dict[str, Build]) -> Any:
    """Actions see the selection in the list's order: newest first."""
    created = {build.build_id: build.created_at for build in builds.values()}
    return lambda build_id: -created[build_id].timestamp()


def test_the_rebuild_button_queues_the_next_build_and_opens_it(
    operator: Client, django_capture_on_commit_callbacks: Any
) -> None:
    failed = make_build("failed", client_ip="198.51.100.9")
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator.post(f"{LIST}{failed.pk}/rebuild/")
    rebuilt = Build.objects.exclude(pk=failed.pk).get()
    assert response.status_code == 302
    assert response["Location"] == page_of(rebuilt)
    assert len(callbacks) == 1  # its task, sent once the transaction commits
    assert (rebuilt.build_id, rebuilt.number, rebuilt.state) == (failed.build_id[:-1] + "2", 2, "pending")
    assert (rebuilt.target_image, rebuilt.container_file, rebuilt.client_ip) == (
        failed.target_image, failed.container_file, "198.51.100.9"
    )  # fmt: skip
    page = operator.get(response["Location"]).content.decode()
    assert f"Rebuilding {failed.build_id} as {rebuilt.build_id} (queued)." in page
    assert "wave-build-cancel-form" in page  # the new build is active
    failed.refresh_from_db()
    assert failed.state == "failed"  # the old one stays as it ended


def test_the_rebuild_action_rebuilds_finished_builds_only(operator: Client) -> None:
    builds = one_of_each()
    selection = [builds[state].pk for state in ("running", "failed")]
    response = operator.post(LIST, {"action": "rebuild", "_selected_action": selection}, follow=True)
    page = response.content.decode()
    failed = builds["failed"]
    rebuilt = Build.objects.get(container_id=failed.container_id, number=2)
    assert rebuilt.state == "pending"
    assert f"Rebuilding {failed.build_id} as {rebuilt.build_id} (queued)." in page
    assert f"Not rebuilt: {builds['running'].build_id} is still running." in page
    assert not Build.objects.filter(container_id=builds["running"].container_id, number=2).exists()
    assert Build.objects.count() == len(builds) + 1


def test_a_rebuild_while_another_build_of_the_target_is_active_changes_nothing(operator: Client) -> None:
    failed = make_build("failed")
    active = make_build("running", number=2)
    response = operator.post(f"{LIST}{failed.pk}/rebuild/", follow=True)
    assert response.redirect_chain == [(page_of(failed), 302)]
    assert (
        f"Not rebuilt: {failed.build_id}: another build of {failed.target_image} is pending or running."
        in response.content.decode()
    )
    assert set(Build.objects.values_list("pk", flat=True)) == {failed.pk, active.pk}


def test_cancel_and_rebuild_need_the_change_permission(client: Client) -> None:
    viewer = get_user_model().objects.create_user("viewer", password="viewer-pass", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_build"))
    client.login(username="viewer", password="viewer-pass")
    running, failed = make_build("running"), make_build("failed", container_file="FROM busybox\nRUN false\n")
    for build in (running, failed):
        page = client.get(page_of(build)).content.decode()
        assert "wave-build-cancel-form" not in page
        assert "wave-build-rebuild-form" not in page
    assert client.post(f"{LIST}{running.pk}/cancel/").status_code == 403
    assert client.post(f"{LIST}{failed.pk}/rebuild/").status_code == 403
    listing = client.get(LIST).content.decode()
    assert 'value="cancel"' not in listing
    assert 'value="rebuild"' not in listing
    assert client.post(LIST, {"action": "cancel", "_selected_action": [running.pk]}).status_code == 200
    assert Build.objects.get(pk=running.pk).state == "running"
    assert Build.objects.count() == 2


def test_the_buttons_accept_only_post(operator: Client) -> None:
    build = make_build("running")
    assert operator.get(f"{LIST}{build.pk}/cancel/").status_code == 405
    assert operator.get(f"{LIST}{build.pk}/rebuild/").status_code == 405
    build.refresh_from_db()
    assert build.state == "running"


def test_a_button_of_an_unknown_build_goes_back_to_the_list(operator: Client) -> None:
    response = operator.post(f"{LIST}999999/cancel/", follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert "No build with ID &#x27;999999&#x27;." in response.content.decode()


def test_anonymous_cannot_see_builds(client: Client) -> None:
    build = make_build("running")
    for url in (LIST, page_of(build)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert client.post(f"{LIST}{build.pk}/cancel/").status_code == 302
    build.refresh_from_db()
    assert build.state == "running"


def test_a_mirror_is_not_rebuilt_and_the_list_filters_by_kind(operator: Client) -> None:
    mirror = make_build("failed", container_file="", kind=Build.Kind.MIRROR, source_image="example.org/app:1")
    response = operator.post(LIST, {"action": "rebuild", "_selected_action": [mirror.pk]}, follow=True)
    assert (
        f"Not rebuilt: {mirror.build_id} is a mirror (the next identical request copies it again)."
        in response.content.decode()
    )
    assert list(Build.objects.values_list("pk", flat=True)) == [mirror.pk]
    assert mirror.build_id in listed(operator.get(f"{LIST}?kind=mirror").content.decode())
    assert listed(operator.get(f"{LIST}?kind=build").content.decode()) == set()


def test_the_change_page_shows_a_conda_builds_lock_and_a_mirrors_source(operator: Client) -> None:
    lock = "@EXPLICIT\nhttps://conda.anaconda.org/bioconda/linux-64/samtools-1.17-h00cdaf9_0.tar.bz2#0123\n"
    build = make_build("succeeded", conda_lock=lock)
    page = operator.get(page_of(build)).content.decode()
    assert "samtools-1.17-h00cdaf9_0.tar.bz2" in page
    mirror = make_build("succeeded", container_file="", number=2, kind=Build.Kind.MIRROR,
                        source_image="example.org/tools/app:1")  # fmt: skip
    assert "example.org/tools/app:1" in operator.get(page_of(mirror)).content.decode()
