"""docker-compose.yml and the Dockerfile (no Docker engine here: checked as documents)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from wave_site.celery import MAINTENANCE_QUEUES, PROCESS_POOL_QUEUES, QUEUES, THREAD_POOL_QUEUES

REPO = Path(__file__).resolve().parents[1]


def load_compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_runs_every_part_of_the_service() -> None:
    services = load_compose()["services"]
    always = {name for name, service in services.items() if "profiles" not in service}
    assert always == {"postgres", "redis", "registry", "web", "worker", "downloads", "maintenance", "beat"}


def test_prometheus_runs_only_with_the_metrics_profile_on_a_pinned_image() -> None:
    prometheus = load_compose()["services"]["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    image, _, tag = prometheus["image"].partition(":")
    assert image == "prom/prometheus"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag)
    assert prometheus["depends_on"] == ["web"]


def prometheus_config() -> dict:
    """The config file compose mounts into the prometheus service (a file of this repository)."""
    prometheus = load_compose()["services"]["prometheus"]
    config_path = option(prometheus["command"], "--config.file", separator="=")
    mounted = {}
    for volume in prometheus["volumes"]:
        source, target, *_ = volume.split(":")
        mounted[target] = source
    assert mounted[config_path].startswith("./")
    return yaml.safe_load((REPO / mounted[config_path]).read_text())


def test_prometheus_scrapes_the_web_services_metrics_endpoint() -> None:
    compose = load_compose()
    (job,) = prometheus_config()["scrape_configs"]
    (target,) = [target for group in job["static_configs"] for target in group["targets"]]
    host, port = target.split(":")
    assert host == "web"
    # The port the web process listens on in its container (the Dockerfile's uvicorn), the one compose publishes.
    assert f"--port {port} " in (REPO / "Dockerfile").read_text()
    assert f"{port}:{port}" in compose["services"]["web"]["ports"]
    assert job["metrics_path"] == "/metrics"
    assert job.get("scheme", "http") == "http"


def test_prometheus_sends_the_token_the_web_service_checks() -> None:
    """Web reads WAVE_METRICS_ENABLED and WAVE_METRICS_TOKEN from the caller's environment; Prometheus gets the
    same variable as a compose secret and sends it as a bearer token."""
    compose = load_compose()
    env = compose["services"]["web"]["environment"]
    assert env["WAVE_METRICS_ENABLED"] == "${WAVE_METRICS_ENABLED:-false}"
    assert env["WAVE_METRICS_TOKEN"] == "${WAVE_METRICS_TOKEN:-}"
    (secret,) = compose["services"]["prometheus"]["secrets"]
    assert compose["secrets"][secret] == {"environment": "WAVE_METRICS_TOKEN"}
    (job,) = prometheus_config()["scrape_configs"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": f"/run/secrets/{secret}"}


def test_web_workers_and_beat_share_one_image_built_from_the_repo() -> None:
    services = load_compose()["services"]
    for name in ("web", "worker", "downloads", "maintenance", "beat"):
        build = services[name]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert services[name]["image"] == "wave-django:latest"
        assert "wave-data:/data" in services[name]["volumes"]
        assert set(services[name]["depends_on"]) == {"postgres", "redis", "registry"}


def test_services_point_at_postgres_redis_and_the_registry() -> None:
    compose = load_compose()
    env = compose["services"]["web"]["environment"]
    postgres = compose["services"]["postgres"]["environment"]
    user, password, db = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"]
    assert env["DATABASE_URL"] == f"postgres://{user}:{password}@postgres:5432/{db}"
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert env["WAVE_BUILD_REPO"].startswith("registry:5000/")
    assert "registry" in env["WAVE_INSECURE_REGISTRIES"].split(",")


def test_every_variable_compose_sets_is_one_the_settings_read() -> None:
    settings_source = (REPO / "wave_site" / "settings.py").read_text()
    env = load_compose()["services"]["web"]["environment"]
    for name in env:
        assert f'"{name}"' in settings_source, name


def option(command: list[str], name: str, separator: str = " ") -> str:
    if separator == " ":
        return command[command.index(name) + 1]
    (value,) = [part.removeprefix(f"{name}{separator}") for part in command if part.startswith(f"{name}{separator}")]
    return value


def test_workers_consume_every_queue_downloads_in_threads_and_beat_schedules() -> None:
    """As `manage.py run`: builds in processes, layer downloads in a thread pool of their own, the periodic tasks
    in a third worker."""
    services = load_compose()["services"]
    worker, downloads = services["worker"]["command"], services["downloads"]["command"]
    maintenance = services["maintenance"]["command"]
    for command in (worker, downloads, maintenance):
        assert command[:6] == ["python", "-m", "celery", "-A", "wave_site", "worker"]
    assert (option(worker, "--queues"), option(worker, "--pool")) == (",".join(PROCESS_POOL_QUEUES), "prefork")
    assert (option(downloads, "--queues"), option(downloads, "--pool")) == (",".join(THREAD_POOL_QUEUES), "threads")
    assert (option(maintenance, "--queues"), option(maintenance, "--pool")) == (",".join(MAINTENANCE_QUEUES), "solo")
    assert option(downloads, "--concurrency") == "16"
    assert sorted([*PROCESS_POOL_QUEUES, *THREAD_POOL_QUEUES, *MAINTENANCE_QUEUES]) == sorted(QUEUES)
    assert services["worker"]["privileged"] is True
    assert "beat" in services["beat"]["command"]


def test_only_the_build_worker_is_privileged() -> None:
    """buildah (namespaces, mounts, chroot) needs it; nothing else gets more than Docker's defaults."""
    services = load_compose()["services"]
    assert [name for name, service in services.items() if service.get("privileged")] == ["worker"]
    for service in services.values():
        assert not {"cap_add", "security_opt", "devices", "pid", "network_mode"} & set(service)


def test_the_build_worker_shares_the_data_volume_with_web() -> None:
    """In compose the blob store is the filesystem one in /data (build contexts in, build logs out) and the
    secret key is generated there: the worker must see web's, not a volume of its own."""
    services = load_compose()["services"]
    assert services["worker"]["volumes"] == services["web"]["volumes"] == ["wave-data:/data"]
    assert "WAVE_BLOB_STORE" not in services["web"]["environment"]
    assert services["worker"]["environment"] == services["web"]["environment"]


def test_dockerfile_installs_the_builder_and_the_requirements() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    installed = re.search(r"apt-get install -y --no-install-recommends ([^\\&]+)", dockerfile)
    assert installed is not None
    # buildah; util-linux's setpriv and unshare and mount's umount confine and clean up each build (builds.backends).
    assert {"buildah", "skopeo", "umoci", "util-linux", "mount"} <= set(installed.group(1).split())
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "wave_site.asgi:application" in dockerfile
    assert "manage.py migrate" in dockerfile
