"""URLs shown or logged lose their user info and signature-like query values."""

from __future__ import annotations

import pytest

from wave_site.redact import redact_text, redact_url


def test_user_info_and_signatures_are_redacted_host_and_path_kept() -> None:
    shown = redact_url("http://alice:pass@host:8080/x/layer.tar.gz?X-Amz-Signature=abc&part=1&X-Amz-Credential=zz")
    assert shown == "http://REDACTED@host:8080/x/layer.tar.gz?X-Amz-Signature=REDACTED&part=1&X-Amz-Credential=REDACTED"
    assert "alice" not in shown
    assert "abc" not in shown


def test_plain_url_is_unchanged() -> None:
    assert redact_url("https://example.com/a/b.tar.gz?part=2") == "https://example.com/a/b.tar.gz?part=2"


def test_ipv6_host_and_token_parameter() -> None:
    assert redact_url("https://[::1]:99/p?token=1") == "https://[::1]:99/p?token=REDACTED"


def test_unparsable_url_shows_only_its_scheme() -> None:
    assert redact_url("http://host:abc/secret") == "http://REDACTED"


def test_redact_text_replaces_the_url_inside_a_message() -> None:
    url = "http://bob:hunter2@h/x"
    assert (
        redact_text(f"Download of {url} answered HTTP 404", url) == "Download of http://REDACTED@h/x answered HTTP 404"
    )


def test_semicolon_separated_parameters_are_redacted() -> None:
    assert redact_url("http://h/x?q=1;X-Amz-Signature=SECRET") == "http://h/x?q=1;X-Amz-Signature=REDACTED"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://h/x?X-Amz-Signature%3DSECRET", "http://h/x?X-Amz-Signature=REDACTED"),
        ("http://h/x?X-Amz-Signature%253DSECRET&part=1", "http://h/x?X-Amz-Signature=REDACTED&part=1"),
        ("http://h/x?X%2DAmz%2DSignature=SECRET", "http://h/x?X-Amz-Signature=REDACTED"),
    ],
)
def test_secret_names_are_matched_percent_decoded(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "http://h/x?q=X-Amz-Signature%3DSECRET",  # a secret's name and value inside another value
        "http://h/x?a=1%26X-Amz-Signature%3DSECRET",  # an encoded separator
        "http://h/x?next=http://other/y?sig=SECRET",
        "http://h/x?a=%25252525252541SECRET",  # encoded again and again
    ],
)
def test_a_query_whose_secret_cannot_be_cut_out_is_dropped_whole(url: str) -> None:
    assert redact_url(url) == "http://h/x?REDACTED"


def test_values_that_merely_contain_a_secret_word_are_kept() -> None:
    assert redact_url("http://h/x?file=monkey.tar.gz") == "http://h/x?file=monkey.tar.gz"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("alice:s3cr3tpw@host/x", "REDACTED@host/x"),
        ("alice@host/x", "REDACTED@host/x"),
        ("a:b@c@quay.io/x:1", "REDACTED@quay.io/x:1"),
        ("//alice:pw@host/x", "//REDACTED@host/x"),
        ("http://host/redirect/alice:pw@other/x", "http://host/redirect/REDACTED@other/x"),
    ],
)
def test_user_info_is_redacted_with_or_without_a_scheme(value: str, shown: str) -> None:
    assert redact_url(value) == shown


@pytest.mark.parametrize(
    "name",
    [
        f"ubuntu:22.04@sha256:{'a' * 64}",
        f"quay.io/org/app:1@sha256:{'b' * 64}",
        "docker.io/library/busybox:latest",
        "https://registry.npmjs.org/@scope/pkg",
    ],
)
def test_digests_and_plain_names_are_kept(name: str) -> None:
    assert redact_url(name) == name


def test_an_image_name_with_a_signature_is_redacted() -> None:
    assert (
        redact_url("localhost:1/x/y:latest?X-Amz-Signature=SECRET&X-Amz-Credential=AKIA")
        == "localhost:1/x/y:latest?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"
    )


@pytest.mark.parametrize(
    "url", ["http://[::1/x?sig=1", "http://alice:pw@[::1/x", "http://alice%3Apw%40host/x", "http://h:99x/a"]
)
def test_an_authority_that_does_not_parse_is_hidden_whole(url: str) -> None:
    assert redact_url(url) == "http://REDACTED"


def test_path_parameters_and_fragments_lose_their_secrets() -> None:
    assert redact_url("http://h/x;jsessionid=SECRET?a=1#token=SECRET") == "http://h/x;jsessionid=REDACTED?a=1"


def test_control_characters_are_shown_escaped() -> None:
    assert redact_url("http://h/small\r\nX-Injected: 1\x00") == "http://h/small\\r\\nX-Injected: 1\\x00"
