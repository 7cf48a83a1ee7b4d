from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from requests_app.models import ContainerRequest, InjectedLayer

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client: Client) -> Client:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    return client


def make_request(token: str, image: str, **fields: object) -> ContainerRequest:
    defaults = {"expires_at": timezone.now() + dt.timedelta(hours=1), "target_image": f"localhost:9090/wt/{token}/x"}
    return ContainerRequest.objects.create(token=token, source_image=image, **{**defaults, **fields})


def make_failed_layer(request: ContainerRequest, *, gzip_digest: str, tar_digest: str, reason: str) -> InjectedLayer:
    return InjectedLayer.objects.create(
        request=request, position=0, kind="http", url="https://e.org/l.tgz", gzip_digest=gzip_digest,
        gzip_size=10, tar_digest=tar_digest, state="failed", failure_reason=reason,
    )  # fmt: skip


def test_changelist_searches_by_token_image_and_fingerprint(operator: Client) -> None:
    make_request("aaaaaaaaaaaa", "quay.io/org/alpha:1", fingerprint="fp-alpha")
    make_request("bbbbbbbbbbbb", "docker.io/library/beta:2")
    page = operator.get("/admin/requests_app/containerrequest/?q=aaaaaaaaaaaa").content.decode()
    assert "quay.io/org/alpha:1" in page
    assert "beta" not in page
    page = operator.get("/admin/requests_app/containerrequest/?q=beta").content.decode()
    assert "bbbbbbbbbbbb" in page
    assert "aaaaaaaaaaaa" not in page
    page = operator.get("/admin/requests_app/containerrequest/?q=fp-alpha").content.decode()
    assert "aaaaaaaaaaaa" in page


def test_state_filter(operator: Client) -> None:
    make_request("aaaaaaaaaaaa", "a/active:1")
    make_request("bbbbbbbbbbbb", "b/expired:1", expires_at=timezone.now() - dt.timedelta(minutes=1))
    make_request("cccccccccccc", "c/revoked:1", revoked_at=timezone.now())
    for state, token in (("active", "aaaaaaaaaaaa"), ("expired", "bbbbbbbbbbbb"), ("revoked", "cccccccccccc")):
        page = operator.get(f"/admin/requests_app/containerrequest/?state={state}").content.decode()
        assert token in page
        assert sum(t in page for t in ("aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc")) == 1


def test_request_page_shows_layers_read_only(operator: Client) -> None:
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    make_failed_layer(
        request, gzip_digest="sha256:" + "d" * 64, tar_digest="sha256:" + "e" * 64, reason="gzip digest mismatch"
    )
    page = operator.get(f"/admin/requests_app/containerrequest/{request.pk}/change/").content.decode()
    assert "https://e.org/l.tgz" in page
    assert "gzip digest mismatch" in page
    assert 'name="layers-0-url"' not in page  # no editable layer inputs


def test_revoke_action(operator: Client) -> None:
    first = make_request("aaaaaaaaaaaa", "a/b:1")
    second = make_request("bbbbbbbbbbbb", "a/b:2")
    response = operator.post(
        "/admin/requests_app/containerrequest/",
        {"action": "revoke", "_selected_action": [first.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "1 token(s) revoked." in response.content.decode()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.revoked_at is not None
    assert second.revoked_at is None


def test_anonymous_cannot_see_requests(client: Client) -> None:
    make_request("aaaaaaaaaaaa", "a/b:1")
    response = client.get("/admin/requests_app/containerrequest/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_request_page_shows_the_digests_served(operator: Client) -> None:
    request = make_request(
        "dddddddddddd", "a/b:1", source_digest="sha256:" + "5" * 64, wave_digest="sha256:" + "6" * 64
    )
    page = operator.get(f"/admin/requests_app/containerrequest/{request.pk}/change/").content.decode()
    assert "Digests served" in page
    assert "sha256:" + "5" * 64 in page
    assert "sha256:" + "6" * 64 in page


def test_layers_list_shows_state_and_reason(operator: Client) -> None:
    request = make_request("eeeeeeeeeeee", "a/b:1")
    make_failed_layer(
        request, gzip_digest="sha256:" + "7" * 64, tar_digest="sha256:" + "8" * 64, reason="Layer size does not match"
    )
    page = operator.get("/admin/requests_app/injectedlayer/?state=failed").content.decode()
    assert "Layer size does not match" in page


def column_headers(page: str) -> list[str]:
    return re.findall(r'<th scope="col" class="(?:sortable )?column-([a-z_]+)', page)


def test_changelist_shows_short_columns_and_a_state_badge(operator: Client) -> None:
    long_image = "registry.example.org/" + "very-long-organisation/" * 6 + "image:1"
    make_request("aaaaaaaaaaaa", long_image)
    make_request("bbbbbbbbbbbb", "b/revoked:1", revoked_at=timezone.now())
    page = operator.get("/admin/requests_app/containerrequest/").content.decode()
    assert column_headers(page) == ["token", "image", "caller", "created", "expires", "state"]
    assert f'<span class="wave-truncate" title="{long_image}">{long_image}</span>' in page
    assert '<span class="wave-state wave-state-active">active</span>' in page
    assert '<span class="wave-state wave-state-revoked">revoked</span>' in page
    assert "localhost:9090/wt/" not in page  # the target image is on the request page only


def caller_cell(page: str, token: str) -> str:
    """The caller cell of `token`'s row in the requests list."""
    (row,) = [row for row in page.split("<tr") if f">{token}</a>" in row]
    cell = re.search(r'<td class="field-caller">(.*?)</td>', row, re.S)
    assert cell is not None, token
    return cell.group(1)


def tower_request(token: str, image: str) -> ContainerRequest:
    return make_request(
        token, image, client_ip="192.0.2.7", user_id=4242, user_name="alice-tower", user_email="alice@example.org",
        tower_endpoint="https://tower.example.org/api", tower_workspace_id=98765,
    )  # fmt: skip


def test_changelist_shows_the_caller_user_name_or_else_the_client_ip(operator: Client) -> None:
    tower_request("aaaaaaaaaaaa", "a/tower:1")
    make_request("bbbbbbbbbbbb", "b/anonymous:1", client_ip="198.51.100.9")
    make_request("cccccccccccc", "c/unknown:1")
    page = operator.get("/admin/requests_app/containerrequest/").content.decode()
    assert caller_cell(page, "aaaaaaaaaaaa") == (
        '<span class="wave-truncate wave-short" title="alice-tower">alice-tower</span>'
    )
    assert caller_cell(page, "bbbbbbbbbbbb") == (
        '<span class="wave-truncate wave-short" title="198.51.100.9">198.51.100.9</span>'
    )
    assert caller_cell(page, "cccccccccccc") == '<span class="wave-truncate wave-short" title="-">-</span>'
    assert "192.0.2.7" not in page  # a known user is shown by name, not by address


def test_request_page_shows_the_caller(operator: Client) -> None:
    request = tower_request("aaaaaaaaaaaa", "a/tower:1")
    page = operator.get(f"/admin/requests_app/containerrequest/{request.pk}/change/").content.decode()
    caller = page[page.index('class="fieldset-heading">Caller</h2>') :]
    caller = caller[: caller.index("</fieldset>")]
    for label, value in (
        ("User name", "alice-tower"), ("User email", "alice@example.org"), ("User id", "4242"),
        ("Client ip", "192.0.2.7"), ("Tower endpoint", "https://tower.example.org/api"),
        ("Tower workspace id", "98765"),
    ):  # fmt: skip
        assert re.search(rf"<label>{label}:</label>\s*<div class=\"readonly\">{re.escape(value)}</div>", caller), label


def test_changelist_searches_by_caller(operator: Client) -> None:
    tower_request("aaaaaaaaaaaa", "a/tower:1")
    make_request("bbbbbbbbbbbb", "b/other:1", user_name="bob-tower", user_email="bob@example.org")
    make_request("cccccccccccc", "c/anonymous:1", client_ip="198.51.100.9")
    for query in ("alice-tower", "ALICE", "alice@example.org"):
        page = operator.get("/admin/requests_app/containerrequest/", {"q": query}).content.decode()
        assert "aaaaaaaaaaaa" in page, query
        assert "bbbbbbbbbbbb" not in page, query
        assert "cccccccccccc" not in page, query


@pytest.mark.parametrize("model", ["containerrequest", "injectedlayer"])
def test_read_only_records_show_no_save_buttons(operator: Client, model: str) -> None:
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    layer = make_failed_layer(request, gzip_digest="sha256:" + "1" * 64, tar_digest="sha256:" + "2" * 64, reason="x")
    pk = request.pk if model == "containerrequest" else layer.pk
    page = operator.get(f"/admin/requests_app/{model}/{pk}/change/").content.decode()
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in page, button
    assert 'class="closelink"' in page


def test_request_page_has_a_revoke_button_that_revokes(operator: Client) -> None:
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    other = make_request("bbbbbbbbbbbb", "a/b:2")
    page = operator.get(f"/admin/requests_app/containerrequest/{request.pk}/change/").content.decode()
    action = f"/admin/requests_app/containerrequest/{request.pk}/revoke/"
    assert f'<form id="wave-revoke-form" method="post" action="{action}">' in page
    assert '<button type="submit" form="wave-revoke-form" class="wave-revoke">Revoke token</button>' in page

    response = operator.post(action)
    assert response.status_code == 302
    assert response["Location"] == f"/admin/requests_app/containerrequest/{request.pk}/change/"
    request.refresh_from_db()
    other.refresh_from_db()
    assert request.revoked_at is not None
    assert other.revoked_at is None
    page = operator.get(response["Location"]).content.decode()
    assert "Token aaaaaaaaaaaa revoked: pulls with it are refused." in page
    assert "wave-revoke-form" not in page  # nothing left to revoke
    assert '<span class="wave-state wave-state-revoked">revoked</span>' in page


def test_revoke_button_on_an_expired_token_changes_nothing(operator: Client) -> None:
    expired_at = timezone.now() - dt.timedelta(minutes=1)
    request = make_request("aaaaaaaaaaaa", "a/b:1", expires_at=expired_at)
    assert "wave-revoke-form" not in operator.get(f"/admin/requests_app/containerrequest/{request.pk}/change/").text
    response = operator.post(f"/admin/requests_app/containerrequest/{request.pk}/revoke/", follow=True)
    assert "Token aaaaaaaaaaaa was already expired or revoked." in response.content.decode()
    request.refresh_from_db()
    assert request.revoked_at is None


def test_revoke_view_accepts_only_post(operator: Client) -> None:
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    assert operator.get(f"/admin/requests_app/containerrequest/{request.pk}/revoke/").status_code == 405
    request.refresh_from_db()
    assert request.revoked_at is None


def test_revoke_needs_the_change_permission(client: Client) -> None:
    viewer = get_user_model().objects.create_user("viewer", password="viewer-pass", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_containerrequest"))
    client.login(username="viewer", password="viewer-pass")
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    page = client.get(f"/admin/requests_app/containerrequest/{request.pk}/change/")
    assert page.status_code == 200
    assert "wave-revoke-form" not in page.content.decode()
    assert client.post(f"/admin/requests_app/containerrequest/{request.pk}/revoke/").status_code == 403
    listing = client.get("/admin/requests_app/containerrequest/").content.decode()
    assert 'value="revoke"' not in listing  # no revoke action either
    request.refresh_from_db()
    assert request.revoked_at is None


def test_revoke_button_of_an_unknown_request_goes_back_to_the_list(operator: Client) -> None:
    response = operator.post("/admin/requests_app/containerrequest/999999/revoke/", follow=True)
    assert response.redirect_chain == [("/admin/requests_app/containerrequest/", 302)]
    assert "No container request with ID &#x27;999999&#x27;." in response.content.decode()


ADMIN_MODELS = ["containerrequest", "injectedlayer", "layerdownload", "generateddocument"]


MALFORMED_FILTERS = [
    "created_at__year=99999999999999999999",
    "created_at__year=99999",
    "created_at__gte=99999999-01-01",
    "token__startswith=%00",
    "state__exact=%00",
    "q=%00",
]


@pytest.mark.parametrize("model", ADMIN_MODELS)
def test_malformed_filters_redirect_with_the_error_flag(operator: Client, model: str) -> None:
    operator.raise_request_exception = False
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    make_failed_layer(request, gzip_digest="sha256:" + "1" * 64, tar_digest="sha256:" + "2" * 64, reason="x")
    for query in MALFORMED_FILTERS:
        response = operator.get(f"/admin/requests_app/{model}/?{query}")
        assert response.status_code == 302, (query, response.content[:300])
        assert response["Location"] == f"/admin/requests_app/{model}/?e=1"
    assert operator.get(f"/admin/requests_app/{model}/?e=1").status_code == 200


@pytest.mark.parametrize("model", ADMIN_MODELS)
def test_an_id_beyond_its_column_filters_to_nothing(operator: Client, model: str) -> None:
    make_request("aaaaaaaaaaaa", "a/b:1")
    page = operator.get(f"/admin/requests_app/{model}/?id=99999999999999999999999")
    assert page.status_code == 200
    assert "aaaaaaaaaaaa" not in page.content.decode()


@pytest.mark.parametrize("selected", ["abc", "99999999999999999999", "1.5", "-1", "\x00", "٣"])
def test_revoke_action_on_a_malformed_selection_changes_nothing(operator: Client, selected: str) -> None:
    operator.raise_request_exception = False
    request = make_request("aaaaaaaaaaaa", "a/b:1")
    response = operator.post(
        "/admin/requests_app/containerrequest/",
        {"action": "revoke", "_selected_action": [str(request.pk), selected]},
        follow=True,
    )
    assert response.redirect_chain == [("/admin/requests_app/containerrequest/", 302)]
    assert "No action taken: the selection is not a list of row ids." in response.content.decode()
    request.refresh_from_db()
    assert request.revoked_at is None
