"""The credentials admin, rendered: every page of pairing keys, Tower sessions, lookups and registry credentials,
none showing a secret; registry passwords write-only and sealed."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from credentials.models import CredentialLookup, PairingKey, RegistryCredential, TowerAuth
from credentials.pairing import pairing_key_register
from credentials.provider import service_credentials
from credentials.secrets import unseal
from requests_app.models import ContainerRequest

pytestmark = pytest.mark.django_db

ACCESS_TOKEN = "eyJhbGciOi.tower-ACCESS-token-1f2e3d"
REFRESH_TOKEN = "tower-REFRESH-token-9a8b7c"
PASSWORD = "registry-PASSW0RD-5e6f"
NEW_PASSWORD = "registry-NEW-passw0rd-7d8c"
FERNET_PREFIX = "gAAAAA"  # every sealed value (a Fernet token) starts so


@pytest.fixture
def operator(client: Client) -> Client:
    get_user_model().objects.create_superuser("ops", password="ops-pass")
    client.login(username="ops", password="ops-pass")
    return client


@dataclass
class Rows:
    pairing: PairingKey
    auth: TowerAuth
    lookup: CredentialLookup
    credential: RegistryCredential
    request: ContainerRequest

    def secrets(self) -> list[str]:
        """Every secret the rows hold, in every form that could leak: plain, sealed, and pieces of each."""
        private_pem = self.pairing.private_key_pem().decode()
        pem_body = "".join(private_pem.splitlines()[1:-1])
        values = [
            self.pairing.public_key, self.pairing.public_key[100:160], self.pairing.private_key_sealed, private_pem,
            pem_body[200:260], "PRIVATE KEY", ACCESS_TOKEN, REFRESH_TOKEN, "ACCESS-token", "REFRESH-token",
            self.auth.access_token_sealed, self.auth.refresh_token_sealed, self.auth.key, PASSWORD,
            self.credential.password_sealed, FERNET_PREFIX,
        ]  # fmt: skip
        return [value for value in values if value]


@pytest.fixture
def rows() -> Rows:
    pairing = pairing_key_register(service="tower", endpoint="https://tower.example.org/api")
    auth = TowerAuth(key="k" * 64, endpoint="https://tower.example.org/api", user_id=4242, user_name="alice-tower")
    auth.set_tokens(access_token=ACCESS_TOKEN, refresh_token=REFRESH_TOKEN)
    auth.save()
    lookup = CredentialLookup.objects.create(
        endpoint="https://tower.example.org/api", workspace_id=98765, user_id=4242, user_name="alice-tower",
        registry="quay.io", credentials_id="cred-17", outcome=CredentialLookup.Outcome.FOUND, duration_ms=12,
    )  # fmt: skip
    credential = RegistryCredential(registry="registry.example.org:5000", username="robot", description="builds")
    credential.set_password(PASSWORD)
    credential.save()
    request = ContainerRequest.objects.create(
        token="aaaaaaaaaaaa", source_image="quay.io/org/private:1", target_image="localhost:9090/wt/aaaaaaaaaaaa/x",
        expires_at=timezone.now() + dt.timedelta(hours=1), user_id=4242, user_name="alice-tower",
        tower_endpoint="https://tower.example.org/api", tower_auth=auth,
    )  # fmt: skip
    return Rows(pairing=pairing, auth=auth, lookup=lookup, credential=credential, request=request)


def pages_of(rows: Rows) -> list[str]:
    pages = ["/admin/", "/admin/credentials/", "/admin/credentials/registrycredential/add/",
             f"/admin/requests_app/containerrequest/{rows.request.pk}/change/"]  # fmt: skip
    for model, pk in (
        ("pairingkey", rows.pairing.pk),
        ("towerauth", rows.auth.pk),
        ("credentiallookup", rows.lookup.pk),
        ("registrycredential", rows.credential.pk),
    ):
        base = f"/admin/credentials/{model}/"
        pages += [base, f"{base}?q=example", f"{base}{pk}/change/", f"{base}{pk}/history/"]
    pages.append(f"/admin/credentials/registrycredential/{rows.credential.pk}/delete/")
    return pages


def test_every_page_renders_without_a_secret(operator: Client, rows: Rows) -> None:
    secrets = rows.secrets()
    for url in pages_of(rows):
        response = operator.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        for secret in secrets:
            assert secret not in page, (url, secret[:12])


def test_pages_show_what_operators_need(operator: Client, rows: Rows) -> None:
    page = operator.get("/admin/credentials/pairingkey/").content.decode()
    assert str(rows.pairing.pairing_id) in page
    assert "https://tower.example.org/api" in page
    assert re.findall(r'class="(?:sortable )?column-([a-z_]+)', page) == [
        "pairing_id", "service", "endpoint_shown", "created", "lease_ends", "retired",
    ]  # fmt: skip
    page = operator.get(f"/admin/credentials/towerauth/{rows.auth.pk}/change/").content.decode()
    assert "alice-tower" in page
    assert "4242" in page
    page = operator.get("/admin/credentials/credentiallookup/").content.decode()
    assert "cred-17" in page
    assert "98765" in page
    page = operator.get("/admin/credentials/registrycredential/").content.decode()
    assert "registry.example.org:5000" in page
    assert "robot" in page
    page = operator.get(f"/admin/requests_app/containerrequest/{rows.request.pk}/change/").content.decode()
    session = f'<a href="/admin/credentials/towerauth/{rows.auth.pk}/change/">alice-tower at https://tower.example.org/api</a>'
    assert session in page


@pytest.mark.parametrize("model", ["pairingkey", "towerauth", "credentiallookup"])
def test_records_the_service_writes_are_read_only(operator: Client, rows: Rows, model: str) -> None:
    pk = {"pairingkey": rows.pairing.pk, "towerauth": rows.auth.pk, "credentiallookup": rows.lookup.pk}[model]
    assert operator.get(f"/admin/credentials/{model}/add/").status_code == 403
    page = operator.get(f"/admin/credentials/{model}/{pk}/change/").content.decode()
    for button in ('name="_save"', 'name="_continue"', 'name="_addanother"', "deletelink"):
        assert button not in page, button
    assert "addlink" not in operator.get(f"/admin/credentials/{model}/").content.decode()
    assert operator.post(f"/admin/credentials/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
    assert PairingKey.objects.count() == TowerAuth.objects.count() == CredentialLookup.objects.count() == 1


def test_pairing_keys_are_searched_by_endpoint(operator: Client, rows: Rows) -> None:
    other = pairing_key_register(service="tower", endpoint="https://other.example.net")
    page = operator.get("/admin/credentials/pairingkey/", {"q": "other.example"}).content.decode()
    assert str(other.pairing_id) in page
    assert str(rows.pairing.pairing_id) not in page


def test_lookups_filter_by_outcome_and_date_and_search_by_registry_or_user(operator: Client, rows: Rows) -> None:
    last_year = timezone.now() - dt.timedelta(days=400)
    CredentialLookup.objects.create(
        endpoint="https://tower.example.org/api", user_name="bob-tower", registry="ghcr.io", credentials_id="cred-99",
        outcome=CredentialLookup.Outcome.ERROR, error="Tower answered 500", created_at=last_year,
    )  # fmt: skip
    base = "/admin/credentials/credentiallookup/"
    cases = [
        ({"outcome__exact": "found"}, "cred-17", "cred-99"),
        ({"outcome__exact": "error"}, "cred-99", "cred-17"),
        ({"created_at__year": str(last_year.year)}, "cred-99", "cred-17"),
        ({"q": "ghcr"}, "cred-99", "cred-17"),
        ({"q": "alice"}, "cred-17", "cred-99"),
    ]
    for query, shown, hidden in cases:
        page = operator.get(base, query).content.decode()
        assert shown in page, query
        assert hidden not in page, query
    page = operator.get(base).content.decode()
    assert f'href="?created_at__year={last_year.year}"' in page  # the date drill-down


@pytest.mark.parametrize("model", ["pairingkey", "towerauth", "credentiallookup", "registrycredential"])
def test_malformed_filters_redirect_with_the_error_flag(operator: Client, rows: Rows, model: str) -> None:
    operator.raise_request_exception = False
    for query in ("created_at__year=99999999999999999999", "q=%00", "id=99999999999999999999999&x__in=%00"):
        response = operator.get(f"/admin/credentials/{model}/?{query}")
        assert response.status_code == 302, (query, response.content[:300])
        assert response["Location"] == f"/admin/credentials/{model}/?e=1"


def add_credential(operator: Client, **fields: str) -> str:
    data = {"registry": "quay.io", "username": "robot", "password": PASSWORD, "description": "", "is_enabled": "on"}
    response = operator.post("/admin/credentials/registrycredential/add/", {**data, **fields})
    return response.content.decode() if response.status_code == 200 else ""


def test_adding_a_registry_credential_seals_the_password(operator: Client) -> None:
    assert service_credentials("quay.io") is None
    page = operator.get("/admin/credentials/registrycredential/add/").content.decode()
    assert '<input type="password" name="password" autocomplete="new-password" required' in page

    assert add_credential(operator, registry="  Quay.IO ") == ""  # redirected: saved
    credential = RegistryCredential.objects.get()
    assert credential.registry == "quay.io"
    assert credential.username == "robot"
    assert credential.is_enabled
    assert PASSWORD not in credential.password_sealed
    assert unseal(credential.password_sealed) == PASSWORD
    found = service_credentials("quay.io")  # applies at once in this process
    assert found is not None
    assert (found.username, found.password) == ("robot", PASSWORD)
    page = operator.get(f"/admin/credentials/registrycredential/{credential.pk}/change/").content.decode()
    assert '<input type="password" name="password" autocomplete="new-password" aria-describedby' in page
    assert PASSWORD not in page
    assert credential.password_sealed not in page


def test_adding_needs_a_password_and_never_echoes_one(operator: Client) -> None:
    page = add_credential(operator, password="")
    assert "This field is required." in page
    page = add_credential(operator, registry="https://quay.io")
    assert "without a scheme" in page
    assert PASSWORD not in page
    assert not RegistryCredential.objects.exists()


@pytest.mark.parametrize(
    ("entered", "stored"),
    [
        ("quay.io", "quay.io"),
        ("Registry.Example.ORG:5000", "registry.example.org:5000"),
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("10.0.0.5:443", "10.0.0.5:443"),
        ("[::1]:5000", "[::1]:5000"),
        ("localhost", "localhost"),
    ],
)
def test_registry_is_normalised(operator: Client, entered: str, stored: str) -> None:
    assert add_credential(operator, registry=entered) == ""
    assert RegistryCredential.objects.get().registry == stored


@pytest.mark.parametrize(
    ("entered", "message"),
    [
        ("https://quay.io", "without a scheme"),
        ("quay.io/org/repo", "without a path"),
        ("robot@quay.io", "without user info"),
        ("quay.io:99999", "Enter the registry as host[:port]"),
        ("quay.io:", "Enter the registry as host[:port]"),
        ("quay io", "Enter the registry as host[:port]"),
        ("-quay.io", "Enter the registry as host[:port]"),
        ("[::1", "Enter the registry as host[:port]"),
        ("[::1]x", "Enter the registry as host[:port]"),
        ("[nothing]:5000", "Enter the registry as host[:port]"),
        ("", "This field is required."),
    ],
)
def test_malformed_registry_is_a_form_error_and_nothing_is_stored(operator: Client, entered: str, message: str) -> None:
    page = add_credential(operator, registry=entered)
    assert message in page
    assert not RegistryCredential.objects.exists()


def test_a_registry_is_entered_once_whatever_its_case(operator: Client) -> None:
    assert add_credential(operator) == ""
    page = add_credential(operator, registry="QUAY.io", password=NEW_PASSWORD)
    assert "Registry credential with this Registry already exists." in page
    assert unseal(RegistryCredential.objects.get().password_sealed) == PASSWORD


def test_changing_with_an_empty_password_keeps_it(operator: Client, rows: Rows) -> None:
    credential = rows.credential
    url = f"/admin/credentials/registrycredential/{credential.pk}/change/"
    data = {"registry": credential.registry, "username": "robot-2", "description": "pulls", "is_enabled": "on"}
    response = operator.post(url, {**data, "password": ""})
    assert response.status_code == 302
    changed = RegistryCredential.objects.get(pk=credential.pk)
    assert (changed.username, changed.description) == ("robot-2", "pulls")
    assert changed.password_sealed == credential.password_sealed
    assert changed.password == PASSWORD

    response = operator.post(url, {**data, "password": NEW_PASSWORD})
    assert response.status_code == 302
    changed.refresh_from_db()
    assert NEW_PASSWORD not in changed.password_sealed
    assert changed.password == NEW_PASSWORD
    history = operator.get(f"{url.removesuffix('change/')}history/").content.decode()
    assert "Changed Username and Description." in history  # the fields named, never their values
    assert "Changed Password." in history
    assert NEW_PASSWORD not in history


def test_disabling_and_deleting_apply_at_once(operator: Client, rows: Rows) -> None:
    credential = rows.credential
    assert service_credentials(credential.registry) is not None
    url = f"/admin/credentials/registrycredential/{credential.pk}/change/"
    data = {"registry": credential.registry, "username": "robot", "description": "", "password": ""}
    assert operator.post(url, data).status_code == 302  # is_enabled unticked
    assert service_credentials(credential.registry) is None
    assert RegistryCredential.objects.get().password == PASSWORD
    response = operator.post(f"/admin/credentials/registrycredential/{credential.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not RegistryCredential.objects.exists()
