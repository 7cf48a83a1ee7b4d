from __future__ import annotations

import pytest

from registry.ssrf import DestinationRefusedError, check_destination


@pytest.mark.parametrize(
    "authority",
    ["127.0.0.1:5000", "localhost", "10.1.2.3", "172.16.0.1", "192.168.1.1:443", "169.254.169.254",
     "[::1]:5000", "[fd00::1]", "0.0.0.0", "metadata.google.internal", "[::ffff:127.0.0.1]",
     "100.100.100.200", "100.64.0.1", "[2002:7f00:1::1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]", "224.0.0.1"],
)  # fmt: skip
def test_local_private_and_metadata_destinations_are_refused(authority: str) -> None:
    with pytest.raises(DestinationRefusedError):
        check_destination(authority)


def test_unresolvable_host_fails_closed_without_sending_the_user_to_the_allow_list() -> None:
    with pytest.raises(DestinationRefusedError) as error:
        check_destination("no-such-host.invalid")
    assert error.value.message == (
        "Destination 'no-such-host.invalid' is not allowed: the host name does not resolve (check its spelling)"
    )


@pytest.mark.parametrize(
    ("authority", "host", "reason"),
    [("127.0.0.1:5000", "127.0.0.1", "it resolves to a private or local address"),
     ("localhost:5999", "localhost", "it resolves to a private or local address"),
     ("[::1]:5000", "::1", "it resolves to a private or local address"),
     ("metadata.google.internal", "metadata.google.internal", "cloud metadata service")],
)  # fmt: skip
def test_every_refusal_names_the_setting_that_allows_the_host(authority: str, host: str, reason: str) -> None:
    with pytest.raises(DestinationRefusedError) as error:
        check_destination(authority)
    assert (
        error.value.message == f"Destination '{host}' is not allowed: {reason} (set WAVE_SSRF_ALLOW={host} to allow it)"
    )
    check_destination(authority, allow=[host])  # the named way out works


def test_public_addresses_pass() -> None:
    check_destination("8.8.8.8")
    check_destination("[2001:4860:4860::8888]:443")


def test_allow_list_names_hosts_on_any_port_and_trusted_names_exact_authorities() -> None:
    check_destination("127.0.0.1:5000", allow=["127.0.0.1"])
    check_destination("localhost:1234", allow=["LOCALHOST"])
    check_destination("localhost:5000", trusted=["localhost:5000"])
    with pytest.raises(DestinationRefusedError):
        check_destination("localhost:5001", trusted=["localhost:5000"])


def test_connections_are_checked_on_the_address_actually_contacted(anonymous_image) -> None:
    """A name that passed an earlier check but resolves to a private address now is refused at connect time."""
    import httpx

    from registry.ssrf import address_check, guarded_transport

    port = anonymous_image.registry.host.split(":")[1]
    refusing = httpx.Client(transport=guarded_transport(address_check(allow=[])))
    with pytest.raises(DestinationRefusedError) as error:
        refusing.get(f"http://localhost:{port}/v2/")
    assert error.value.message == (
        "Destination 'localhost' is not allowed: it resolves to a private or local address"
        " (set WAVE_SSRF_ALLOW=localhost to allow it)"
    )
    allowing = httpx.Client(transport=guarded_transport(address_check(allow=["localhost"])))
    assert allowing.get(f"http://localhost:{port}/v2/").status_code == 200
    trusting = httpx.Client(transport=guarded_transport(address_check(trusted=[f"127.0.0.1:{port}"])))
    assert trusting.get(f"http://127.0.0.1:{port}/v2/").status_code == 200


def test_trusted_ipv6_authority_is_matched_with_brackets() -> None:
    from registry.ssrf import address_check

    address_check(trusted=["[::1]:5000"])("::1", 5000, "::1")
    with pytest.raises(DestinationRefusedError):
        address_check(trusted=["[::1]:5000"])("::1", 5001, "::1")
