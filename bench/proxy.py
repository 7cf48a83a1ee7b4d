"""Registry proxy benchmarks, each measured side by side in one run.

- `pull`: `skopeo copy` of a 5-layer ~200 MB image through the proxy, vs directly from the upstream
  registry, vs the same registry software in pull-through mode (`proxy: remoteurl`). Target <= 1.15.
- `manifests`: manifest GETs by 50 concurrent clients, proxy vs the upstream registry. Target >= 0.5.
- `blob_memory`: peak RSS of the web processes while 20 clients stream a 500 MB blob. Target < 200 MB.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.load import interleaved
from bench.service import running_service
from tests.support.images import Builder
from tests.support.network import free_port, wait_until
from tests.support.registry import ANONYMOUS, Registry, start_registry
from tests.support.service import RunningService

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(remaining, 4 * 1024 * 1024))
            handle.write(chunk)
            remaining -= len(chunk)


def build_layered_image(builder: Builder, registry: Registry, *, layers: int, layer_size: int) -> str:
    """busybox plus `layers` layers of random (incompressible) data; returns the pushed reference."""
    image = builder.busybox_image()
    scratch = Path(tempfile.mkdtemp(prefix="wave-bench-layer-", dir=builder.root))
    for index in range(layers):
        data = scratch / f"data-{index}.bin"
        _random_file(data, layer_size)
        container = builder.buildah("from", image)
        builder.buildah("copy", container, str(data), f"/data/{index}.bin")
        image = builder.buildah("commit", "--format", "docker", "--quiet", container)
        builder.buildah("rm", container)
        data.unlink()
    reference = f"{registry.host}/bench/layered:latest"
    builder.push(image, reference)
    return reference


def _timed_copy(reference: str, destination: Path) -> float:
    shutil.rmtree(destination, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{destination}"],
        check=True, capture_output=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    shutil.rmtree(destination, ignore_errors=True)
    return elapsed


@contextmanager
def pull_through_registry(upstream: Registry) -> Iterator[str]:
    """docker-registry in pull-through cache mode in front of `upstream`; yields its host."""
    root = Path(tempfile.mkdtemp(prefix="wave-bench-pullthrough-"))
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"proxy:\n  remoteurl: {upstream.url}\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 200, timeout=20, what="registry")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _container_token(service: RunningService, image: str, **body: object) -> dict:
    response = httpx.post(f"{service.url}/container-token", json={"containerImage": image, **body}, timeout=60)
    response.raise_for_status()
    return response.json()


def pull(*, layers: int = 5, layer_size: int = 40 * 1024 * 1024, rounds: int = 3) -> None:
    builder = Builder()
    upstream = start_registry(ANONYMOUS)
    try:
        reference = build_layered_image(builder, upstream, layers=layers, layer_size=layer_size)
        with (
            tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
            running_service(Path(tmp), WAVE_SSRF_ALLOW="127.0.0.1") as service,
            pull_through_registry(upstream) as mirror,
        ):
            target = _container_token(service, reference)["targetImage"]
            destination = Path(tmp) / "copy"
            results: dict[str, list[float]] = {"direct": [], "proxy": [], "pull-through (cold)": []}
            for round_index in range(rounds):  # interleaved, so that drift affects both sides alike
                results["direct"].append(_timed_copy(reference, destination))
                results["proxy"].append(_timed_copy(target, destination))
                if round_index == 0:  # a pull-through cache is cold only once
                    results["pull-through (cold)"].append(_timed_copy(f"{mirror}/bench/layered:latest", destination))
    finally:
        upstream.stop()
        builder.cleanup()
    total = layers * layer_size / 1024 / 1024
    median = {name: sorted(times)[len(times) // 2] for name, times in results.items()}
    print(f"\nskopeo copy of a {layers}-layer image (~{total:.0f} MB of random data), median of {rounds}")
    for name, times in results.items():
        print(f"{name:<22} {median[name]:6.2f} s   ({', '.join(f'{t:.2f}' for t in times)})")
    print(f"ratio proxy / direct: {median['proxy'] / median['direct']:.2f} (target <= 1.15)")
    print(f"ratio proxy / pull-through registry (cold): {median['proxy'] / median['pull-through (cold)']:.2f}")


def manifests(*, seconds: int = 10, connections: int = 50) -> None:
    builder = Builder()
    upstream = start_registry(ANONYMOUS)
    try:
        reference = f"{upstream.host}/bench/small:latest"
        builder.push(builder.busybox_image(), reference)
        with (
            tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
            running_service(Path(tmp), WAVE_SSRF_ALLOW="127.0.0.1") as service,
        ):
            token = _container_token(service, reference)["containerToken"]
            script = Path(tmp) / "accept.lua"
            script.write_text(f'wrk.headers["Accept"] = "{MANIFEST_ACCEPT}"\n')
            medians = interleaved(
                {
                    "proxy": {"url": f"{service.url}/v2/wt/{token}/bench/small/manifests/latest",
                              "connections": connections, "seconds": seconds, "script": str(script)},
                    "registry": {"url": f"{upstream.url}/v2/bench/small/manifests/latest",
                                 "connections": connections, "seconds": seconds, "script": str(script)},
                }
            )  # fmt: skip
            ours, direct = medians["proxy"], medians["registry"]
    finally:
        upstream.stop()
        builder.cleanup()
    print(f"\nmanifest GET by tag, {connections} connections, {seconds}s each (median of 3)")
    print(ours.line("through the proxy"))
    print(direct.line("upstream registry direct"))
    print(f"ratio proxy / registry: {ours.requests_per_second / direct.requests_per_second:.2f} (target >= 0.5)")


def _upload_blob(registry: Registry, repository: str, path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    name = f"sha256:{digest.hexdigest()}"
    start = httpx.post(f"{registry.url}/v2/{repository}/blobs/uploads/")
    location = httpx.URL(registry.url).join(start.headers["Location"])
    with open(path, "rb") as handle:
        put = httpx.put(location.copy_merge_params({"digest": name}), content=handle,
                        headers={"Content-Type": "application/octet-stream"}, timeout=300)  # fmt: skip
    put.raise_for_status()
    return name


def _web_rss(port: int) -> dict[int, int]:
    """Resident memory (bytes) of each of the service's web processes (uvicorn and its workers), by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
            if f"WAVE_PORT={port}".encode() not in environ:
                continue
            if any(word in cmdline for word in (b"celery", b"manage.py", b"docker-registry")):
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry.name)] = int(line.split()[1]) * 1024
        except OSError:
            continue
    return found


def blob_memory(*, size: int = 500 * 1024 * 1024, clients: int = 20) -> None:
    builder = Builder()
    upstream = start_registry(ANONYMOUS)
    try:
        reference = f"{upstream.host}/bench/big:latest"
        builder.push(builder.busybox_image(), reference)
        blob_file = Path(builder.root) / "big.bin"
        _random_file(blob_file, size)
        digest = _upload_blob(upstream, "bench/big", blob_file)
        blob_file.unlink()
        with (
            tempfile.TemporaryDirectory(prefix="wave-bench-") as tmp,
            running_service(Path(tmp), WAVE_SSRF_ALLOW="127.0.0.1") as service,
        ):
            token = _container_token(service, reference)["containerToken"]
            url = f"{service.url}/v2/wt/{token}/bench/big/blobs/{digest}"
            idle = _web_rss(service.port)
            peak = dict(idle)
            peak_total = sum(idle.values())
            done = threading.Event()

            def sample() -> None:
                nonlocal peak_total
                while not done.is_set():
                    now = _web_rss(service.port)
                    for pid, rss in now.items():
                        peak[pid] = max(peak.get(pid, 0), rss)
                    peak_total = max(peak_total, sum(now.values()))
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            downloads = [subprocess.Popen(["curl", "-sf", "-o", "/dev/null", "-w", "%{size_download}", url],
                                          stdout=subprocess.PIPE, text=True) for _ in range(clients)]  # fmt: skip
            sizes = [int(p.communicate()[0] or 0) for p in downloads]
            elapsed = time.perf_counter() - started
            done.set()
            sampler.join()
    finally:
        upstream.stop()
        builder.cleanup()
    complete = sum(1 for s in sizes if s == size)
    print(f"\n{clients} clients streaming a {size / 1024 / 1024:.0f} MB blob through the proxy")
    throughput = clients * size / elapsed / 1024 / 1024
    print(f"complete downloads: {complete}/{clients} in {elapsed:.1f} s ({throughput:.0f} MB/s)")
    mb = 1024 * 1024
    worst = max(peak.values())
    print(f"web processes (uvicorn parent + workers): idle {sum(idle.values()) / mb:.0f} MB in all, "
          f"peak {peak_total / mb:.0f} MB in all")  # fmt: skip
    for pid in sorted(peak):
        print(f"  pid {pid}: idle {idle.get(pid, 0) / mb:.0f} MB, peak {peak[pid] / mb:.0f} MB")
    print(f"peak RSS of one web process: {worst / mb:.0f} MB (target < 200 MB)")
    print(f"ratio peak RSS of one web process / blob size: {worst / size:.2f}")
