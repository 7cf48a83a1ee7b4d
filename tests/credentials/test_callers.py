from __future__ import annotations

import pytest
from pytest_django.fixtures import Settings

from credentials.callers import Caller, tower_endpoint_of, tower_user_key
from wave_site.errors import InvalidRequest


def test_tower_endpoints_are_taken_as_given_without_trailing_slash_and_the_legacy_one_rewritten(
    settings: Settings,
) -> None:
    assert tower_endpoint_of("https://tower.example.org/api/") == "https://tower.example.org/api"
    assert tower_endpoint_of("https://api.tower.nf") == "https://api.cloud.seqera.io"
    assert tower_endpoint_of("https://api.tower.nf/") == "https://api.cloud.seqera.io"
    settings.WAVE_TOWER_ENDPOINT = "http://tower.internal:8000/api"
    assert tower_endpoint_of(None) == tower_endpoint_of("") == "http://tower.internal:8000/api"


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://tower.example.org", "tower.example.org", "https://", "https://host:port", "https://h/x?q=1",
     "https://h/#frag", "https://a b", "https://user:secret-pw@host"],
)  # fmt: skip
def test_malformed_tower_endpoints_are_refused_without_echoing_user_info(endpoint: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        tower_endpoint_of(endpoint)
    assert refused.value.message.startswith("Invalid Tower endpoint '")
    assert "secret-pw" not in refused.value.message


def test_callers_are_rate_limited_by_tower_user_when_known() -> None:
    assert Caller(ip="192.0.2.1").rate_limit_key == "ip:192.0.2.1"
    alice = Caller(ip="192.0.2.1", user_id=7, user_name="alice", tower_endpoint="https://tower.example.org/api")
    assert alice.rate_limit_key == tower_user_key("https://tower.example.org/api", 7)
    assert alice.rate_limit_key.startswith("user:")
    assert alice.rate_limit_key.endswith(":7")
    # The same id at another Tower (anyone may pair one) is another budget.
    other = Caller(ip="192.0.2.1", user_id=7, user_name="alice", tower_endpoint="https://evil.example.org")
    assert other.rate_limit_key != alice.rate_limit_key
