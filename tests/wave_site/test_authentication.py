"""Operators' logins: failed attempts throttled per client address, and passwords hashed off the event loop."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.support.asgi_server import AsgiServer
from tests.wave_site import hashers
from wave_site.authentication import login_failure_record, login_throttle_check
from wave_site.errors import RateLimited

UNKNOWN_TOKEN_URL = "/container-token/0123456789ab"  # an operator who gets past authentication reads a 404
ADDRESS = "10.0.0.1"
OTHER_ADDRESS = "10.0.0.2"


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def operator(settings, django_user_model: type[User]) -> Iterator[User]:
    settings.PASSWORD_HASHERS = ["tests.wave_site.hashers.RecordingHasher"]
    settings.WAVE_LOGIN_MAX_FAILURES = 3
    settings.WAVE_LOGIN_FAILURE_WINDOW = 10**9  # one window for the whole test: no boundary to cross
    user = django_user_model.objects.create_user("op", password="right", is_staff=True, is_superuser=True)
    hashers.THREADS.clear()
    yield user
    hashers.THREADS.clear()


def delete(client: Client, password: str, address: str) -> httpx.Response:
    return client.delete(UNKNOWN_TOKEN_URL, HTTP_AUTHORIZATION=basic("op", password), REMOTE_ADDR=address)


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 10**9
    assert response.json() == {"message": f"Too many failed logins from this address - retry in {retry_after} seconds"}


@pytest.mark.django_db
def test_failed_basic_logins_lock_the_address_out_without_hashing(client: Client, operator: User) -> None:
    for _ in range(3):
        response = delete(client, "wrong", ADDRESS)
        assert response.status_code == 401
        assert response.json() == {"message": "Invalid username/password."}
    assert len(hashers.THREADS) == 3

    assert_throttled(delete(client, "wrong", ADDRESS))
    assert_throttled(delete(client, "right", ADDRESS))  # the right password too, until the window ends
    assert len(hashers.THREADS) == 3  # no password was checked while locked out

    other = delete(client, "right", OTHER_ADDRESS)  # other clients are unaffected
    assert other.status_code == 404
    assert other.json() == {"message": "Unknown container token '0123456789ab'"}


@pytest.mark.django_db
def test_failed_admin_logins_lock_the_address_out(client: Client, operator: User) -> None:
    def login(password: str, address: str) -> httpx.Response:
        return client.post("/admin/login/", {"username": "op", "password": password}, REMOTE_ADDR=address)

    for _ in range(3):
        assert login("wrong", ADDRESS).status_code == 200  # the form again, with its error
    assert len(hashers.THREADS) == 3
    assert_throttled(login("wrong", ADDRESS))
    assert_throttled(login("right", ADDRESS))
    assert len(hashers.THREADS) == 3
    assert "_auth_user_id" not in client.session

    logged_in = login("right", OTHER_ADDRESS)
    assert logged_in.status_code == 302
    assert client.session["_auth_user_id"] == str(operator.pk)


@pytest.mark.django_db
def test_admin_and_basic_failures_share_one_count(client: Client, operator: User) -> None:
    client.post("/admin/login/", {"username": "op", "password": "wrong"}, REMOTE_ADDR=ADDRESS)
    delete(client, "wrong", ADDRESS)
    delete(client, "wrong\x00", ADDRESS)  # refused before any lookup, counted all the same
    assert_throttled(delete(client, "right", ADDRESS))


@pytest.mark.django_db
def test_lockout_ends_with_its_window(client: Client, operator: User, settings) -> None:
    settings.WAVE_LOGIN_FAILURE_WINDOW = 2
    time.sleep(2 - time.time() % 2 + 0.05)  # start at the beginning of a window
    for _ in range(3):
        delete(client, "wrong", ADDRESS)
    locked = delete(client, "right", ADDRESS)
    assert locked.status_code == 429
    assert locked["Retry-After"] == "1"
    time.sleep(2 - time.time() % 2 + 0.05)
    assert delete(client, "right", ADDRESS).status_code == 404


def test_throttle_counts_per_address_and_window(settings) -> None:
    settings.WAVE_LOGIN_MAX_FAILURES = 2
    settings.WAVE_LOGIN_FAILURE_WINDOW = 300
    start = 1_800_000_000.0  # a window boundary (a multiple of 300)
    for now in (start + 1, start + 2):
        login_throttle_check(address=ADDRESS, now=now)
        login_failure_record(address=ADDRESS, now=now)
    with pytest.raises(RateLimited) as refused:
        login_throttle_check(address=ADDRESS, now=start + 100)
    assert refused.value.headers == {"Retry-After": "200"}
    login_throttle_check(address=OTHER_ADDRESS, now=start + 100)
    login_throttle_check(address=ADDRESS, now=start + 300)  # the next window


def test_passwords_are_hashed_in_request_threads_not_on_the_event_loop(
    asgi_server: AsgiServer, operator: User, transactional_db: None
) -> None:
    response = httpx.delete(f"{asgi_server.url}{UNKNOWN_TOKEN_URL}", auth=("op", "wrong"))
    assert response.status_code == 401
    assert len(hashers.THREADS) == 1
    assert hashers.THREADS[0].startswith("wave-request")  # uvicorn's loop runs in the thread "uvicorn-test"
