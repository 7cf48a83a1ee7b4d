from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.support.service import REPO, service_environment
from wave_site.config import env_bool, env_int, env_list, env_str, env_url, redact_url, registry_credentials_file

WEB = frozenset({"http", "https"})


def test_env_int_reads_value_and_default() -> None:
    assert env_int("WAVE_PORT", 9090, environ={"WAVE_PORT": "8081"}) == 8081
    assert env_int("WAVE_PORT", 9090, environ={}) == 9090
    assert env_int("WAVE_PORT", 9090, environ={"WAVE_PORT": "  "}) == 9090


def test_env_int_names_the_variable_when_not_a_number() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^WAVE_PORT must be an integer, got 'abc'$"):
        env_int("WAVE_PORT", 9090, environ={"WAVE_PORT": "abc"})


def test_env_int_enforces_bounds() -> None:
    with pytest.raises(ImproperlyConfigured, match="WAVE_PORT must be at most 65535, got 70000"):
        env_int("WAVE_PORT", 9090, maximum=65535, environ={"WAVE_PORT": "70000"})
    with pytest.raises(ImproperlyConfigured, match="WAVE_PORT must be at least 1, got 0"):
        env_int("WAVE_PORT", 9090, minimum=1, environ={"WAVE_PORT": "0"})


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("ON", True), ("no", False), ("0", False)])
def test_env_bool(raw: str, expected: bool) -> None:
    assert env_bool("WAVE_DEBUG", not expected, environ={"WAVE_DEBUG": raw}) is expected


def test_env_bool_names_the_variable_when_unreadable() -> None:
    with pytest.raises(ImproperlyConfigured, match="WAVE_DEBUG must be a boolean"):
        env_bool("WAVE_DEBUG", False, environ={"WAVE_DEBUG": "maybe"})


def test_env_list_splits_and_trims() -> None:
    assert env_list("X", ["a"], environ={"X": " reg.io , localhost:5000,, "}) == ["reg.io", "localhost:5000"]
    assert env_list("X", ["a"], environ={}) == ["a"]


def test_env_str_treats_blank_as_unset() -> None:
    assert env_str("X", "default", environ={"X": ""}) == "default"
    assert env_str("X", None, environ={"X": " value "}) == "value"


def test_env_url_rejects_nonsense_naming_the_variable() -> None:
    schemes = frozenset({"postgres", "postgresql"})
    with pytest.raises(ImproperlyConfigured, match=r"^DATABASE_URL must be a URL with scheme postgres, postgresql"):
        env_url("DATABASE_URL", None, schemes=schemes, environ={"DATABASE_URL": "nonsense"})
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL has an invalid port"):
        env_url("DATABASE_URL", None, schemes=schemes, environ={"DATABASE_URL": "postgres://h:port/db"})
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL must name a host"):
        env_url("REDIS_URL", None, schemes=frozenset({"redis"}), environ={"REDIS_URL": "redis:///0"})


def test_env_url_error_never_shows_the_password() -> None:
    with pytest.raises(ImproperlyConfigured) as error:
        env_url(
            "DATABASE_URL", None, schemes=frozenset({"postgres"}), environ={"DATABASE_URL": "mysql://u:hunter2@h/db"}
        )
    assert "hunter2" not in str(error.value)
    assert "mysql://u:***@h/db" in str(error.value)


def test_redact_url_keeps_urls_without_password() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("postgres://u:p@db:5432/x") == "postgres://u:***@db:5432/x"


def _settings_value(tmp_path: Path, name: str, **env: str) -> str:
    """A setting as a fresh process computes it from `env` (settings are read once, at import)."""
    environment = service_environment(WAVE_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="wave_site.settings", **env)
    environment.pop("WAVE_SERVER_URL", None)
    environment.update(env)
    code = f"from django.conf import settings; print(settings.{name})"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_public_url_follows_wave_port_when_not_set(tmp_path: Path) -> None:
    assert _settings_value(tmp_path, "WAVE_SERVER_URL", WAVE_PORT="9390") == "http://localhost:9390"
    assert _settings_value(tmp_path, "WAVE_SERVER_URL") == "http://localhost:9090"


def test_configured_public_url_wins_over_wave_port(tmp_path: Path) -> None:
    value = _settings_value(tmp_path, "WAVE_SERVER_URL", WAVE_PORT="9390", WAVE_SERVER_URL="https://wave.example.org/")
    assert value == "https://wave.example.org"


def test_a_malformed_registry_credentials_file_stops_the_start_naming_the_entry(tmp_path: Path) -> None:
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"registry.example.org:5000": {"username": "alice"}}))
    environment = service_environment(
        WAVE_DATA_DIR=str(tmp_path / "data"), DJANGO_SETTINGS_MODULE="wave_site.settings",
        WAVE_REGISTRY_CREDENTIALS=str(creds),
    )  # fmt: skip
    code = "import django; django.setup()"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True)
    assert result.returncode != 0
    assert (
        "ImproperlyConfigured: WAVE_REGISTRY_CREDENTIALS: entry 'registry.example.org:5000' needs a username and a "
        "password" in result.stderr
    )
    creds.write_text("{not json")
    with pytest.raises(ImproperlyConfigured, match=r"WAVE_REGISTRY_CREDENTIALS: cannot read .* JSONDecodeError"):
        registry_credentials_file(str(creds))
    creds.write_text(json.dumps({"Quay.IO": {"username": "q", "password": "secret-pw"}}))
    assert registry_credentials_file(str(creds)) == {"quay.io": ("q", "secret-pw")}
