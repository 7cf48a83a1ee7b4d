"""The throttles' counting: clients by network (an IPv6 client by its /64), fixed windows, Retry-After."""

from __future__ import annotations

import pytest

from credentials.throttle import client_network, subject_digest, throttle_hit


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_clients_are_counted_by_address_or_ipv6_64(address: str, counted_as: str) -> None:
    assert client_network(address) == counted_as


def test_subject_digests_are_short_and_do_not_show_the_subject() -> None:
    digest = subject_digest("quay.io", "alice")
    assert len(digest) == 32
    assert "alice" not in digest
    assert digest != subject_digest("quay.io", "alicf")


def test_attempts_past_the_limit_get_the_rest_of_the_window() -> None:
    now = 1_000_020.0  # 20 s into a 60 s window (1 000 020 // 60 * 60 = 999 960 + 60)
    hits = [throttle_hit(name="test", subject="s", limit=2, window=60, now=now) for _ in range(3)]
    start = int(now // 60) * 60
    assert hits == [0, 0, int(start + 60 - now)]
    assert throttle_hit(name="test", subject="other", limit=2, window=60, now=now) == 0
    assert throttle_hit(name="test", subject="s", limit=2, window=60, now=start + 60) == 0  # the next window
