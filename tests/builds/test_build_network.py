"""The `filtered` build network (builds.backends.network) with real buildah, slirp4netns and nftables: builds
reach public addresses, their cache repository and slirp's DNS, nothing else of the worker's networks."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from builds.backends.network import (
    NON_GLOBAL_IPV4,
    SLIRP_GATEWAY,
    Exceptions,
    cache_exceptions,
    own_public_addresses,
    rejected,
    resolv_conf,
    ruleset,
)
from registry.ssrf import _is_public
from tests.builds.test_backend_buildah import Log, assert_nothing_left, build, make_job
from tests.conftest import PushedImage
from tests.support.network import free_port, wait_until
from tests.support.service import REPO, service_environment

GLOBAL_SAMPLES = ("1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0", "126.255.255.255",
                  "128.0.0.0", "169.253.255.255", "172.15.255.255", "172.32.0.0", "192.0.1.1", "192.0.3.0",
                  "192.167.255.255", "192.169.0.0", "198.17.255.255", "198.20.0.0", "198.51.99.255", "203.0.112.255",
                  "223.255.255.255")  # fmt: skip


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return tmp_path / "data"


class Listener:
    """A TCP server that records what each connection sends (a stand-in for a service on the worker's network)."""

    def __init__(self, address: str) -> None:
        self.server = socket.create_server((address, 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                try:
                    self.received.append(connection.recv(1024))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture
def loopback_listener() -> Iterator[Listener]:
    listener = Listener("127.0.0.1")
    yield listener
    listener.close()


def worker_private_address() -> str:
    """The worker's address on its outbound interface (no packet is sent), when it is a private one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("1.1.1.1", 53))
        address = str(probe.getsockname()[0])
    if _is_public(address) or ipaddress.ip_address(address).is_loopback:
        pytest.skip(f"the worker's outbound address {address} is not a private one")
    return address


# --- The rules ----------------------------------------------------------------------------------


def test_every_rejected_network_is_one_the_ssrf_rules_refuse() -> None:
    for text in NON_GLOBAL_IPV4:
        network = ipaddress.IPv4Network(text)
        middle = network.network_address + network.num_addresses // 2
        for address in (network.network_address, middle, network.broadcast_address):
            assert not _is_public(str(address)), f"{address} in {network} is public for registry.ssrf"


def test_every_network_the_ssrf_rules_refuse_is_rejected() -> None:
    """ipaddress's own list of non-global networks (plus shared address space and multicast, which
    `_is_public` refuses too) lies within the rejected ranges, and the address just outside each rejected
    range is public unless another range holds it."""
    refused = [*ipaddress.IPv4Network._constants._private_networks, ipaddress.IPv4Network("100.64.0.0/10")]  # type: ignore[attr-defined]
    refused.append(ipaddress.IPv4Network("224.0.0.0/4"))
    rejected_networks = [ipaddress.IPv4Network(text) for text in NON_GLOBAL_IPV4]
    for network in refused:
        assert any(network.subnet_of(ours) for ours in rejected_networks), network
    for network in rejected_networks:
        for outside in (int(network.network_address) - 1, int(network.broadcast_address) + 1):
            if 0 <= outside < 2**32 and not rejected(ipaddress.IPv4Address(outside)):
                assert _is_public(str(ipaddress.IPv4Address(outside))), f"{ipaddress.IPv4Address(outside)} is refused"


@pytest.mark.parametrize("address", GLOBAL_SAMPLES)
def test_public_addresses_are_not_rejected(address: str) -> None:
    assert _is_public(address)
    assert not rejected(ipaddress.IPv4Address(address))


def test_the_ruleset_accepts_dns_and_the_exceptions_before_it_rejects_and_nft_takes_it() -> None:
    exceptions = Exceptions(addresses=(("172.18.0.3", 5000),), loopback_ports=(5001,))
    rules = ruleset(exceptions)
    lines = [line.strip() for line in rules.splitlines()]
    first_reject = next(index for index, line in enumerate(lines) if "reject" in line and "ipv6" not in line)
    accepts = [line for line in lines[:first_reject] if line.endswith("accept")]
    assert accepts == [
        'oif "lo" accept',
        "ip daddr 10.0.2.3 udp dport 53 accept",
        "ip daddr 10.0.2.3 tcp dport 53 accept",
        "ip daddr 172.18.0.3 tcp dport 5000 accept",
        f"ip daddr {SLIRP_GATEWAY} tcp dport 5001 accept",
    ]
    assert "meta nfproto ipv6 reject with icmpx type admin-prohibited" in lines
    assert "ip daddr 127.0.0.1 tcp dport { 5001 } dnat to 10.0.2.2" in lines
    assert "dnat" not in ruleset(Exceptions())
    if shutil.which("nft") is None:
        pytest.skip("nftables is not installed")
    for text in (rules, ruleset(Exceptions())):  # loaded for real, in a network namespace of its own
        checked = subprocess.run(["unshare", "--net", "nft", "-c", "-f", "-"], input=text, text=True,
                                 capture_output=True, timeout=30)  # fmt: skip
        assert checked.returncode == 0, checked.stderr


def test_cache_exceptions_follow_the_cache_repositorys_address() -> None:
    assert cache_exceptions(None) == Exceptions()
    assert cache_exceptions("127.0.0.1:5000/wave/cache") == Exceptions(loopback_ports=(5000,))
    assert cache_exceptions("localhost:5001/wave/cache") == Exceptions(loopback_ports=(5001,))
    assert cache_exceptions("10.1.2.3:5000/cache") == Exceptions(addresses=(("10.1.2.3", 5000),))
    assert cache_exceptions("192.168.7.8/cache") == Exceptions(addresses=(("192.168.7.8", 443), ("192.168.7.8", 80)))
    assert cache_exceptions("8.8.8.8:5000/cache") == Exceptions()  # public: nothing to let through
    assert cache_exceptions("8.8.8.8:5000/cache", own=("8.8.8.8",)) == Exceptions(addresses=(("8.8.8.8", 5000),))


FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
           |-- 127.0.0.1
              /32 host LOCAL
     |-- 192.0.2.2
        /32 host LOCAL
     |-- 203.0.114.0
        /24 link UNICAST
     |-- 203.0.114.7
        /32 host LOCAL
     |-- 203.0.114.255
        /32 link BROADCAST
Local:
     |-- 203.0.114.7
        /32 host LOCAL
     |-- 9.9.9.9
        /32 host LOCAL
"""


def test_the_workers_own_public_addresses_are_rejected_too() -> None:
    """A worker with a public address would be reached at it (slirp4netns connects as the worker)."""
    own = own_public_addresses(FIB_TRIE)
    assert own == ("9.9.9.9", "203.0.114.7")
    assert "9.9.9.9, 203.0.114.7 } meta l4proto tcp reject with tcp reset" in ruleset(Exceptions(), own=own)


def test_resolv_conf_keeps_search_and_options_with_slirps_dns() -> None:
    host = "# generated\nsearch corp.example\nnameserver 10.255.255.53\nnameserver fd00::1\noptions ndots:2\n"
    assert resolv_conf(host) == "# generated\nsearch corp.example\noptions ndots:2\nnameserver 10.0.2.3\n"
    assert resolv_conf("") == "nameserver 10.0.2.3\n"


def settings_value(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = service_environment(WAVE_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="wave_site.settings")
    environment.pop("WAVE_BUILD_NETWORK", None)
    environment.update(env)
    code = "from django.conf import settings; print(settings.WAVE_BUILD_NETWORK)"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True)


def test_the_build_network_setting_defaults_to_filtered_and_refuses_others(tmp_path: Path) -> None:
    assert settings_value(tmp_path).stdout == "filtered\n"
    assert settings_value(tmp_path, WAVE_BUILD_NETWORK="").stdout == "filtered\n"
    assert settings_value(tmp_path, WAVE_BUILD_NETWORK="host").stdout == "host\n"
    refused = settings_value(tmp_path, WAVE_BUILD_NETWORK="bridge")
    assert refused.returncode != 0
    assert "WAVE_BUILD_NETWORK must be 'filtered' (the default), 'host' or 'none', got 'bridge'" in refused.stderr


# --- Builds -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_step_reaches_no_private_address_of_the_worker(
    anonymous_image: PushedImage, data_dir: Path, loopback_listener: Listener
) -> None:
    """Not the worker's loopback (directly, or through slirp's gateway, which is the worker's 127.0.0.1), not its
    address on its own network, not the metadata address; the RUN steps still run, their DNS is slirp's."""
    private = Listener(worker_private_address())
    token = uuid.uuid4().hex
    probes = {
        "loopback": f"127.0.0.1 {loopback_listener.port}",
        "gateway": f"{SLIRP_GATEWAY} {loopback_listener.port}",
        "private": f"{private.server.getsockname()[0]} {private.port}",
        "metadata": "169.254.169.254 80",
    }
    steps = "".join(f"RUN echo {token} | nc -w 3 {target}; echo {name}=$?\n" for name, target in probes.items())
    steps += "RUN cat /etc/resolv.conf\n"
    log = Log()
    try:
        outcome = build(make_job(anonymous_image.registry.host, f"FROM {anonymous_image.reference}\n{steps}"), log)
    finally:
        private.close()
    assert outcome.succeeded, outcome.failure_reason
    assert log.text.startswith("Network 'filtered': base images are pulled first")
    assert {name: f"\n{name}=1\n" in log.text for name in probes} == dict.fromkeys(probes, True)
    assert "\nnameserver 10.0.2.3\n" in log.text
    assert loopback_listener.received == []
    assert private.received == []
    assert_nothing_left(data_dir)


@pytest.mark.slow
def test_a_run_step_reaches_public_addresses(anonymous_image: PushedImage, data_dir: Path) -> None:
    try:
        socket.create_connection(("1.1.1.1", 80), timeout=3).close()
    except OSError:
        pytest.skip("this worker reaches no public address")
    container_file = f"FROM {anonymous_image.reference}\nRUN nc -w 5 1.1.1.1 80 < /dev/null; echo public=$?\n"
    log = Log()
    outcome = build(make_job(anonymous_image.registry.host, container_file), log)
    assert outcome.succeeded, outcome.failure_reason
    assert "\npublic=0\n" in log.text


def nft_bundle(into: Path) -> str:
    """The worker's nft with its libraries and loader in `into` (a RUN step's view: /nft); its command line."""
    nft = shutil.which("nft")
    if nft is None:
        pytest.skip("nftables is not installed")
    into.mkdir()
    shutil.copy(nft, into / "nft")
    loader = ""
    for line in subprocess.run(["ldd", nft], capture_output=True, text=True, check=True).stdout.splitlines():
        found = re.search(r"(\S+) => (/\S+)|^\s*(/\S+)", line)
        if found and found.group(2):
            shutil.copy(found.group(2), into / found.group(1))
        elif found and found.group(3):
            loader = Path(found.group(3)).name
            shutil.copy(found.group(3), into / loader)
    assert loader
    return f"/nft/{loader} --library-path /nft /nft/nft"


@pytest.mark.slow
def test_a_run_step_can_change_neither_the_rules_nor_the_interfaces(
    anonymous_image: PushedImage, data_dir: Path, tmp_path: Path, loopback_listener: Listener
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    nft = nft_bundle(context / "nft")
    container_file = (
        f"FROM {anonymous_image.reference}\n"
        "COPY nft /nft\n"
        f"RUN {nft} --version; {nft} flush ruleset; echo flush=$?\n"
        "RUN ip route add 127.0.0.0/8 via 10.0.2.2 dev tap0; echo route=$?\n"
        "RUN grep CapEff /proc/self/status\n"
        f"RUN echo held | nc -w 3 {SLIRP_GATEWAY} {loopback_listener.port}; echo after=$?\n"
    )
    log = Log()
    outcome = build(make_job(anonymous_image.registry.host, container_file, context_dir=context), log)
    assert outcome.succeeded, outcome.failure_reason
    assert re.search(r"\nnftables v\d", log.text)  # the step's nft runs
    assert "Operation not permitted" in log.text
    assert "\nflush=1\n" in log.text
    assert "\nroute=2\n" in log.text  # busybox ip: "RTNETLINK answers: Operation not permitted"
    effective = int(re.search(r"CapEff:\s+([0-9a-f]+)", log.text).group(1), 16)  # type: ignore[union-attr]
    assert effective & (1 << 12) == 0  # CAP_NET_ADMIN
    assert effective & (1 << 13) == 0  # CAP_NET_RAW: no packet socket to write frames past the rules
    assert "\nafter=1\n" in log.text
    assert loopback_listener.received == []
    assert_nothing_left(data_dir)


class Files(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        Files.hits.append(self.path)
        body = b"fetched-by-add"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.mark.slow
def test_add_of_a_loopback_url_fails_in_the_filtered_network_and_is_fetched_in_the_hosts(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings
) -> None:
    """buildah fetches `ADD <url>` itself, in bud: the filtered network rejects what the Containerfile check
    allowed (WAVE_SSRF_ALLOW); with `host` the same build fetches it (so the test can fail)."""
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]
    Files.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/x"
    container_file = f"FROM {anonymous_image.reference}\nADD {url} /x\nRUN cat /x; echo\n"
    try:
        filtered_log, host_log = Log(), Log()
        filtered = build(make_job(anonymous_image.registry.host, container_file), filtered_log)
        filtered_hits = list(Files.hits)
        hosted = build(make_job(anonymous_image.registry.host, container_file, network="host"), host_log)
    finally:
        server.shutdown()
        server.server_close()
    assert not filtered.succeeded
    assert filtered.failure_reason.startswith(f'error building at STEP "ADD {url} /x": ')
    assert "connection refused" in filtered.failure_reason
    assert filtered_hits == []
    assert hosted.succeeded, hosted.failure_reason
    assert host_log.text.startswith("Network 'host': RUN steps share the build worker's network\n")
    assert "\nfetched-by-add\n" in host_log.text
    assert Files.hits == ["/x"]
    assert_nothing_left(data_dir)


def private_registry(address: str, root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """An anonymous registry listening on the worker's private `address` only."""
    port = free_port()
    (root / "data").mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: {address}:{port}\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    host = f"{address}:{port}"
    try:
        wait_until(lambda: socket.create_connection((address, port), timeout=1).close() is None, timeout=20,
                   what=f"registry on {host}")  # fmt: skip
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, host


@pytest.mark.slow
def test_a_cache_repository_at_a_private_address_is_reached_at_its_port_only(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings, tmp_path: Path
) -> None:
    address = worker_private_address()
    process, host = private_registry(address, tmp_path / "registry")
    other = Listener(address)
    settings.WAVE_SSRF_ALLOW = [*settings.WAVE_SSRF_ALLOW, address]
    settings.WAVE_INSECURE_REGISTRIES = [*settings.WAVE_INSECURE_REGISTRIES, host]
    cache = f"{host}/wave/cache-{uuid.uuid4().hex[:8]}"
    container_file = (
        f"FROM {anonymous_image.reference}\n"
        f"RUN echo cache-probe; echo x | nc -w 3 {address} {other.port}; echo other=$?\n"
    )
    first_log, second_log = Log(), Log()
    try:
        job = make_job(anonymous_image.registry.host, container_file, cache_repository=cache)
        first = build(job, first_log)
        second = build(replace(job, target=f"{job.target}-2"), second_log)
    finally:
        other.close()
        process.kill()
        process.wait()
    assert first.succeeded, first.failure_reason
    assert "\nother=1\n" in first_log.text
    assert other.received == []
    assert f"--> Pushing cache {cache}:" in first_log.text
    assert second.succeeded, second.failure_reason
    assert f"--> Cache pulled from remote {cache}:" in second_log.text
    assert "\ncache-probe\n" not in second_log.text
    assert_nothing_left(data_dir)


@pytest.mark.parametrize(("available", "missing", "package"), [((), "slirp4netns", "slirp4netns"),
                                                                (("slirp4netns",), "nft", "nftables")])  # fmt: skip
def test_a_worker_without_slirp4netns_or_nft_fails_filtered_builds_at_once(
    anonymous_image: PushedImage,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    available: tuple[str, ...],
    missing: str,
    package: str,
) -> None:
    path = tmp_path / "bin"
    path.mkdir()
    for command in ("buildah", "setpriv", "unshare", "sh", "mount", "umount", *available):
        found = shutil.which(command)
        assert found is not None
        (path / command).symlink_to(found)
    monkeypatch.setenv("PATH", str(path))
    log = Log()
    started = time.monotonic()
    outcome = build(make_job(anonymous_image.registry.host, f"FROM {anonymous_image.reference}\nRUN true\n"), log)
    assert time.monotonic() - started < 2
    assert outcome.failure_reason == (
        f"'{missing}' is not installed on this build worker (install the Debian package {package})"
    )
    assert (
        log.text == "Network 'filtered': base images are pulled first, then the build reaches public addresses only\n"
    )
    assert os.listdir(data_dir / "builds") == []
