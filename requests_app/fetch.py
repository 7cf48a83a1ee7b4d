"""Fetching one http(s) layer into a file, verified while it streams, within an absolute deadline.

Size, gzip digest and the digest of the decompressed tar are computed chunk by chunk, so memory
stays flat whatever the layer size. Every network read and write ends by the deadline, so a server
dripping bytes (in its headers or its body) cannot hold a worker past it; the body must also arrive
at a minimum rate, and a pause longer than the rate window ends the download. Messages never show the
URL's user info or signatures (wave_site.redact).
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx
from django.conf import settings

from credentials.policy import connect_check, url_destination_check
from registry.deadlines import bound_by_deadline
from registry.ssrf import DestinationRefusedError, guarded_transport
from requests_app.layers import TarDigest
from wave_site.redact import redact_url

MAX_REDIRECTS = 5


class LayerFetchError(Exception):
    """The layer cannot be had as declared: the message is the reason shown to whoever pulls."""


class FetchCancelled(Exception):
    """The caller asked to stop (its job was taken from it): nothing is wrong with the layer."""


@dataclass(frozen=True)
class FetchLimits:
    timeout: float  # absolute, seconds from the first connect to the last byte
    min_rate: int  # bytes per second over each window; 0: no minimum
    rate_window: float  # seconds; also the longest pause allowed between two reads
    max_bytes: int

    @classmethod
    def from_settings(cls) -> FetchLimits:
        return cls(
            timeout=settings.WAVE_LAYER_DOWNLOAD_TIMEOUT,
            min_rate=settings.WAVE_LAYER_DOWNLOAD_MIN_RATE,
            rate_window=settings.WAVE_LAYER_DOWNLOAD_RATE_WINDOW,
            max_bytes=settings.WAVE_LAYER_DOWNLOAD_MAX_BYTES,
        )


def _client(limits: FetchLimits, deadline: float) -> httpx.Client:
    transport = guarded_transport(connect_check)  # the SSRF rules again on the address connected to
    bound_by_deadline(transport, lambda: deadline)
    pause = min(limits.rate_window, limits.timeout)
    timeout = httpx.Timeout(connect=min(10.0, pause), read=pause, write=pause, pool=pause)
    return httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)


def _open(client: httpx.Client, url: str) -> tuple[httpx.Response, str]:
    """GET with redirects followed by hand, each hop checked against the SSRF rules; the response and its URL."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            url_destination_check(url)
        except DestinationRefusedError as exc:
            raise LayerFetchError(exc.message) from None
        try:
            request = client.build_request("GET", url)
        except (httpx.InvalidURL, ValueError):  # not httpx.HTTPErrors: a URL httpx cannot send (a bad IDNA name)
            raise LayerFetchError(f"Download of {redact_url(url)} failed: the URL is invalid") from None
        response = client.send(request, stream=True)
        if not response.is_redirect:
            return response, url
        response.close()
        location = response.headers.get("Location")
        if not location:
            raise LayerFetchError(
                f"Download of {redact_url(url)} answered HTTP {response.status_code}: a redirect without a Location"
            )
        url = urljoin(url, location)  # one httpx could not parse failed in `send` (RemoteProtocolError)
    raise LayerFetchError(f"Too many redirects from {redact_url(url)}")


class _Verifier:
    """Size, gzip digest, tar digest and rate of a body fed chunk by chunk."""

    def __init__(self, *, gzip_size: int, limits: FetchLimits, started: float) -> None:
        self.gzip_size = gzip_size
        self.limits = limits
        self.gzip_hash = hashlib.sha256()
        self.tar = TarDigest(limit=max(64 * gzip_size, 64 * 1024 * 1024))
        self.received = 0
        self.window_start = started
        self.window_bytes = 0

    def update(self, chunk: bytes, *, now: float, shown: str) -> None:
        self.received += len(chunk)
        if self.received > self.gzip_size:
            raise LayerFetchError(f"Layer is larger than its declared gzipSize of {self.gzip_size} bytes")
        self.window_bytes += len(chunk)
        elapsed = now - self.window_start
        if elapsed >= self.limits.rate_window:
            if self.window_bytes < self.limits.min_rate * elapsed:
                raise LayerFetchError(
                    f"Download of {shown} too slow: {self.window_bytes} bytes in {elapsed:.0f} s, "
                    f"below the minimum of {self.limits.min_rate} bytes/s"
                )
            self.window_start, self.window_bytes = now, 0
        self.gzip_hash.update(chunk)
        self.tar.update(chunk)

    def check(self, *, gzip_digest: str, tar_digest: str) -> None:
        if self.received != self.gzip_size:
            raise LayerFetchError(f"Layer size does not match: expected {self.gzip_size} bytes, got {self.received}")
        actual = f"sha256:{self.gzip_hash.hexdigest()}"
        if actual != gzip_digest:
            raise LayerFetchError(f"Layer gzip digest does not match: expected {gzip_digest}, got {actual}")
        actual_tar = self.tar.hexdigest()
        if actual_tar != tar_digest:
            raise LayerFetchError(f"Layer tar digest does not match: expected {tar_digest}, got {actual_tar}")


def fetch_verified(
    url: str,
    *,
    gzip_size: int,
    gzip_digest: str,
    tar_digest: str,
    into: str,
    is_cancelled: Callable[[], bool] = lambda: False,
    limits: FetchLimits | None = None,
) -> None:
    """Stream `url` into the file `into`, checking size and both digests as it comes.

    LayerFetchError (with the reason to show) on any mismatch, refusal, HTTP error, timeout or a rate
    below the minimum; FetchCancelled as soon as `is_cancelled()` says so (checked between reads).
    """
    limits = limits or FetchLimits.from_settings()
    if gzip_size > limits.max_bytes:
        raise LayerFetchError(f"Layer size {gzip_size} exceeds the maximum of {limits.max_bytes} bytes")
    started = time.monotonic()
    deadline = started + limits.timeout
    shown = redact_url(url)
    verifier = _Verifier(gzip_size=gzip_size, limits=limits, started=started)
    try:
        with _client(limits, deadline) as client, open(into, "wb") as output:
            response, shown_url = _open(client, url)
            shown = redact_url(shown_url)
            try:
                if response.status_code != 200:
                    raise LayerFetchError(f"Download of {shown} answered HTTP {response.status_code}")
                for chunk in response.iter_raw():  # as the network delivers it: checks run on every read
                    now = time.monotonic()
                    if now > deadline:
                        raise LayerFetchError(f"Download timed out after {limits.timeout:g} s")
                    if is_cancelled():
                        raise FetchCancelled
                    verifier.update(chunk, now=now, shown=shown)
                    output.write(chunk)
            finally:
                response.close()
        verifier.check(gzip_digest=gzip_digest, tar_digest=tar_digest)
    except DestinationRefusedError as exc:  # refused at connect time: DNS answered differently
        raise LayerFetchError(exc.message) from None
    except httpx.TimeoutException:
        if time.monotonic() >= deadline:
            raise LayerFetchError(f"Download timed out after {limits.timeout:g} s") from None
        raise LayerFetchError(f"Download of {shown} stalled: no data for {limits.rate_window:g} s") from None
    except httpx.HTTPError as exc:
        raise LayerFetchError(f"Download of {shown} failed: {type(exc).__name__}") from None
    except zlib.error as exc:
        raise LayerFetchError(f"Layer is not a valid gzip stream ({exc})") from None
