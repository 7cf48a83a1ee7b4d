"""The `filtered` build network: `buildah bud` (its RUN steps, `ADD <url>`, the layer cache) reaches public
addresses only.

buildah's chroot isolation runs RUN steps in buildah's own network namespace and takes no `--network` but the
host's, which is the worker's: Redis, Postgres, loopback services, the cloud metadata address. So, as for
`none`, the builder pulls the base images first (in the worker's network: their hosts passed the SSRF rules)
and runs `bud --pull=never` under `unshare --net`; here that namespace is connected to the outside by
slirp4netns, a user-space TCP/IP stack in the worker's namespace that makes the connections the build asks for.
Inside the namespace, before buildah starts, an nftables ruleset rejects every destination `registry.ssrf`
refuses (each IPv4 range that is not globally routable, all IPv6 but `lo`) and the worker's own addresses, save
slirp's DNS forwarder and the cache repository. RUN steps lack CAP_NET_ADMIN and CAP_NET_RAW
(buildah.DROPPED_CAPABILITIES): they can neither change the rules nor write frames past them.

slirp4netns joins a process's namespace, so it must start only once `unshare` has made a new one (else it would
serve the worker's own): the worker waits until /proc/<pid>/ns/net is not its own, starts slirp4netns and waits
until it is up, then says "go" on the wrapper's stdin (a pipe). The wrapper, waiting in the namespaces for that
word, loads the rules, points /etc/resolv.conf (in its own mount namespace) at slirp's DNS and becomes buildah.
slirp4netns is killed when the build ends, and exits by itself (`--exit-fd`) if the worker dies.

A cache repository on the worker's loopback (a registry beside the worker, the tests') is reached through
slirp's gateway 10.0.2.2, which is the worker's 127.0.0.1: the rules send that one port there (DNAT), so the
image reference, the auth file and the log stay as they are. A cache repository at another private address is
let through at its address and port only. RUN steps reach the cache repository too, as buildah does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from registry.endpoints import split_host_port

FILTERED = "filtered"
TAP = "tap0"
SLIRP_GATEWAY = "10.0.2.2"  # the worker's 127.0.0.1, as slirp4netns shows it to the namespace
SLIRP_DNS = "10.0.2.3"
SETUP_SECONDS = 15.0
# Every IPv4 network registry.ssrf._is_public refuses (ipaddress: not global, or multicast); tests prove it.
NON_GLOBAL_IPV4 = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/29",
    "192.0.0.170/31", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
TOOLS = {"slirp4netns": "slirp4netns", "nft": "nftables"}  # command: its Debian package
NAMESPACE_POLL_SECONDS = 0.005
# Runs as the namespaces' first process, "go" coming on its stdin:
# `sh -c WRAPPER wave-network <nft> <rules> <resolv.conf> <loopback: yes|no> buildah ...`.
WRAPPER = r"""
nft=$1 rules=$2 resolv=$3 loopback=$4
shift 4
read -r answer || exit 125
[ "$answer" = go ] || exit 125
fail() { echo "Error: setting up the build network: $1"; exit 125; }
"$nft" -f "$rules" || fail "nft could not load the rules"
mount --bind "$resolv" /etc/resolv.conf || fail "/etc/resolv.conf could not point at slirp4netns' DNS"
if [ "$loopback" = yes ]; then
  echo 1 > "/proc/sys/net/ipv4/conf/tap0/route_localnet" || fail "route_localnet could not be set"
fi
exec "$@" < /dev/null
"""


def tools_missing() -> str:
    """Why a filtered build cannot run on this worker, or ""."""
    for command, package in TOOLS.items():
        if shutil.which(command) is None:
            return f"'{command}' is not installed on this build worker (install the Debian package {package})"
    return ""


# --- Rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exceptions:
    """Destinations let through although not public: the cache repository's."""

    addresses: tuple[tuple[str, int], ...] = ()  # (IPv4 address, TCP port), reached as they are
    loopback_ports: tuple[int, ...] = ()  # ports of the worker's 127.0.0.1, reached through slirp's gateway


def cache_exceptions(repository: str | None, *, own: tuple[str, ...] = ()) -> Exceptions:
    """What the cache repository (`host[:port]/path`, SSRF-checked already) needs let through; `own`: the
    worker's public addresses, rejected too."""
    if not repository:
        return Exceptions()
    host, port = split_host_port(repository.split("/", 1)[0])
    ports = (port,) if port else (443, 80)  # https, and plain http for an insecure registry
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return Exceptions()
    addresses = sorted({ipaddress.IPv4Address(info[4][0]) for info in infos})
    if any(address.is_loopback for address in addresses):
        return Exceptions(loopback_ports=ports)  # slirp's gateway leads to 127.0.0.1 (other loopbacks: unreachable)
    private = [str(address) for address in addresses if rejected(address) or str(address) in own]
    return Exceptions(addresses=tuple((address, port) for address in private for port in ports))


def rejected(address: ipaddress.IPv4Address) -> bool:
    """Whether the rules reject `address` (the `NON_GLOBAL_IPV4` ranges)."""
    return any(address in ipaddress.IPv4Network(network) for network in NON_GLOBAL_IPV4)


def own_public_addresses(fib_trie: str) -> tuple[str, ...]:
    """The worker's own IPv4 addresses outside the rejected ranges, from its /proc/net/fib_trie (a worker with a
    public address: slirp4netns would reach the worker's services at it)."""
    found, address = set(), ""
    for line in fib_trie.splitlines():
        words = line.split()
        if words[:1] == ["|--"]:
            address = words[1]
        elif words == ["/32", "host", "LOCAL"] and not rejected(ipaddress.IPv4Address(address)):
            found.add(address)
    return tuple(sorted(found, key=ipaddress.IPv4Address))


def ruleset(exceptions: Exceptions, *, own: tuple[str, ...] = ()) -> str:
    """The namespace's nftables rules: lo, slirp's DNS and `exceptions` accepted, then every destination that is
    not public, and the worker's `own` addresses, rejected (TCP with a reset: a refused connection fails at once)."""
    accepted = [f"ip daddr {SLIRP_DNS} udp dport 53 accept", f"ip daddr {SLIRP_DNS} tcp dport 53 accept"]
    accepted += [f"ip daddr {address} tcp dport {port} accept" for address, port in exceptions.addresses]
    accepted += [f"ip daddr {SLIRP_GATEWAY} tcp dport {port} accept" for port in exceptions.loopback_ports]
    ranges = ", ".join((*NON_GLOBAL_IPV4, *own))
    rules = [
        "table inet wave_build {",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oif "lo" accept',
        "    meta nfproto ipv6 reject with icmpx type admin-prohibited",
        *(f"    {rule}" for rule in accepted),
        f"    ip daddr {{ {ranges} }} meta l4proto tcp reject with tcp reset",
        f"    ip daddr {{ {ranges} }} reject with icmpx type admin-prohibited",
        "  }",
        "}",
    ]
    if exceptions.loopback_ports:  # 127.0.0.1:port to the gateway, from an address the gateway answers
        ports = ", ".join(str(port) for port in exceptions.loopback_ports)
        rules += [
            "table ip wave_build_loopback {",
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            f"    ip daddr 127.0.0.1 tcp dport {{ {ports} }} dnat to {SLIRP_GATEWAY}",
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority srcnat; policy accept;",
            f'    oifname "{TAP}" ip saddr 127.0.0.0/8 masquerade',
            "  }",
            "}",
        ]
    return "\n".join(rules) + "\n"


def resolv_conf(host: str) -> str:
    """The worker's resolv.conf with slirp's DNS for nameserver (the worker's own may be a private address)."""
    kept = [line for line in host.splitlines() if line.split()[:1] != ["nameserver"]]
    return "\n".join([*kept, f"nameserver {SLIRP_DNS}"]) + "\n"


# --- The namespace's link -----------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """A filtered network's files (in the build's work dir) and what the rules let through."""

    rules: Path
    resolv: Path
    log: Path  # slirp4netns' output, for the failure reason
    exceptions: Exceptions


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def filter_prepare(root: Path, cache_repository: str | None) -> Filter:
    """Write the rules and the resolv.conf of a filtered network into the work dir `root`."""
    own = own_public_addresses(_read("/proc/net/fib_trie"))
    exceptions = cache_exceptions(cache_repository, own=own)
    network = Filter(
        rules=root / "network.nft", resolv=root / "resolv.conf", log=root / "slirp4netns.log", exceptions=exceptions
    )
    network.rules.write_text(ruleset(exceptions, own=own), encoding="utf-8")
    network.resolv.write_text(resolv_conf(_read("/etc/resolv.conf")), encoding="utf-8")
    return network


def _namespace_made(pid: int, deadline: float) -> bool | None:
    """Wait until process `pid` is in a network namespace other than ours: True; None if it ended first; False
    at the deadline."""
    own = os.readlink("/proc/self/ns/net")
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != own:
                return True
        except OSError:
            return None
        time.sleep(NAMESPACE_POLL_SECONDS)
    return False


def _wait_readable(descriptor: int, deadline: float) -> bytes | None:
    """What the pipe says (b"" at its end), or None when nothing came before `deadline`."""
    readable, _, _ = select.select([descriptor], [], [], max(0.0, deadline - time.monotonic()))
    return os.read(descriptor, 64) if readable else None


class Link:
    """One filtered `unshare --net` command and the slirp4netns that serves its namespace."""

    def __init__(self, network: Filter) -> None:
        self.network = network
        self.go_read, self.go_write = os.pipe()  # the wrapper's stdin: "go" once the network is up
        self.exit_write = -1  # slirp4netns exits when this end closes: when we close it, or die
        self.slirp: subprocess.Popen[bytes] | None = None

    def wrapper(self) -> list[str]:
        """The command that runs in the namespaces before buildah (buildah's follows)."""
        nft = shutil.which("nft") or "nft"
        loopback = "yes" if self.network.exceptions.loopback_ports else "no"
        return ["sh", "-c", WRAPPER, "wave-network", nft, str(self.network.rules), str(self.network.resolv),
                loopback]  # fmt: skip

    @property
    def stdin(self) -> int:
        return self.go_read

    def attach(self, pid: int, *, deadline: float) -> str:
        """Start slirp4netns for the namespace of `pid` once it exists, then let the wrapper go on: the failure
        reason, or "" (also when the command ended first: its exit is the outcome)."""
        self._close("go_read")  # the command's end
        deadline = min(deadline, time.monotonic() + SETUP_SECONDS)
        made = _namespace_made(pid, deadline)
        if not made:
            return "" if made is None else "The build network could not be set up: its namespace was not made in time"
        up_read, up_write = os.pipe()
        exit_read, self.exit_write = os.pipe()
        try:
            with self.network.log.open("wb") as log:
                self.slirp = subprocess.Popen(
                    ["slirp4netns", "--configure", "--mtu=65520", f"--ready-fd={up_write}", f"--exit-fd={exit_read}",
                     "--enable-sandbox", "--enable-seccomp",
                     *([] if self.network.exceptions.loopback_ports else ["--disable-host-loopback"]),
                     str(pid), TAP],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, pass_fds=(up_write, exit_read),
                    start_new_session=True,
                )  # fmt: skip
            os.close(up_write)
            up_write = -1
            up = _wait_readable(up_read, deadline)
        except OSError as exc:
            return f"The build network could not be set up: slirp4netns did not start ({exc.strerror or exc})"
        finally:
            for descriptor in (up_read, up_write, exit_read):
                if descriptor >= 0:
                    os.close(descriptor)
        if not up:
            lines = self.network.log.read_text(errors="replace").splitlines()
            last = next((line.strip() for line in reversed(lines) if line.strip()), "no output")
            return f"The build network could not be set up: slirp4netns did not start ({last})"
        os.write(self.go_write, b"go\n")
        return ""

    def close(self) -> None:
        """Stop and reap slirp4netns, close the pipes."""
        if self.slirp is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.slirp.pid, signal.SIGKILL)
            self.slirp.wait()
        self._close("go_read", "go_write", "exit_write")

    def _close(self, *names: str) -> None:
        for name in names:
            descriptor = getattr(self, name)
            if descriptor >= 0:
                setattr(self, name, -1)
                os.close(descriptor)
