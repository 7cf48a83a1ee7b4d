"""URLs shown or logged lose their user info and signature-like query values."""

from __future__ import annotations

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
