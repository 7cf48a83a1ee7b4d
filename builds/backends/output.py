"""A builder command's output on its way to the build log: whole lines as they come (a partial line after a
second), secrets masked, and the last error line kept for the failure reason."""

from __future__ import annotations

import codecs
import os
import re
import selectors
import time
from collections.abc import Callable, Iterable

FLUSH_SECONDS = 1.0
READ_BYTES = 65536
MIN_SECRET_LENGTH = 4  # shorter ones cannot be masked without masking ordinary text
MASK = "***"
REASON_MAX_LENGTH = 400
# Go values buildah prints after some errors (`&imagebuilder.Step{Env:[]string{...}, ...}`): noise for people.
GO_VALUE = re.compile(r"\s*&?\b[a-z]\w*\.[A-Z]\w*\{.*$")
ERROR_PREFIXES = ("unshare: ", "setpriv: ")


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


def error_summary(error: str, *, secrets: Iterable[str] = ()) -> str:
    """One line for people from buildah's last error line: `error building at STEP "RUN exit 3": exit status 3`."""
    text = " ".join(GO_VALUE.sub("", error).split())
    if text and not text.lower().startswith(("error", *ERROR_PREFIXES)):
        text = f"error {text}"
    text = mask(text, secrets)
    if len(text) <= REASON_MAX_LENGTH:
        return text
    # The cause is at the end of buildah's chain of contexts (`pushing ...: checking ...: unauthorized`).
    head = REASON_MAX_LENGTH // 3
    return f"{text[:head]} … {text[-(REASON_MAX_LENGTH - head - 3) :]}"


LINE_KEEP = 4096  # characters of the current line kept for the error summary
UNSENT_MAX = 64 * 1024  # characters of a line without end held before they are sent anyway


class Output:
    """Reads a non-blocking pipe; sends what it reads to `log`."""

    def __init__(self, log: Callable[[str], None], *, secrets: Iterable[str] = ()) -> None:
        self.log = log
        self.secrets = sorted((s for s in secrets if len(s) >= MIN_SECRET_LENGTH), key=len, reverse=True)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.selector: selectors.BaseSelector | None = None
        self.unsent = ""  # the start of a line not sent yet
        self.unsent_since = 0.0
        self.line = ""  # the current line so far, for the error summary
        self.last_error = ""
        self.closed = False

    def read(self, descriptor: int, *, timeout: float) -> bool:
        """Wait up to `timeout` for output and send it; False once the output has ended."""
        if self.selector is None:
            self.selector = selectors.DefaultSelector()
            self.selector.register(descriptor, selectors.EVENT_READ)
        if self.selector.select(timeout):
            try:
                chunk = os.read(descriptor, READ_BYTES)
            except BlockingIOError:
                chunk = None
            if chunk == b"":
                self.close()
                return False
            if chunk:
                self.feed(self.decoder.decode(chunk))
        if self.unsent and time.monotonic() - self.unsent_since >= FLUSH_SECONDS:
            self.send(self.unsent)
            self.unsent = ""
        return True

    def feed(self, text: str) -> None:
        # Only a line's start matters for the error summary: memory stays bounded whatever a step prints.
        *lines, partial = text.split("\n")
        if lines:
            self.note((self.line + lines[0])[:LINE_KEEP])
            for line in lines[1:]:
                self.note(line[:LINE_KEEP])
            self.line = partial[:LINE_KEEP]
        elif len(self.line) < LINE_KEEP:
            self.line = (self.line + partial)[:LINE_KEEP]
        complete, newline, rest = (self.unsent + text).rpartition("\n")
        if newline:
            self.send(complete + newline)
            self.unsent = ""
        if rest and not self.unsent:
            self.unsent_since = time.monotonic()
        self.unsent = rest
        if len(self.unsent) >= UNSENT_MAX:  # a line without end goes out in pieces, not held
            self.send(self.unsent)
            self.unsent = ""

    def note(self, line: str) -> None:
        line = line.strip()
        if line.startswith("Error: "):
            self.last_error = line[len("Error: ") :]
        elif line.startswith(ERROR_PREFIXES):
            self.last_error = line

    def send(self, text: str) -> None:
        self.log(mask(text, self.secrets))

    def close(self) -> None:
        """Send what is left (idempotent)."""
        if self.closed:
            return
        self.closed = True
        rest = self.decoder.decode(b"", final=True)
        if rest:
            self.feed(rest)
        if self.line:
            self.note(self.line)
        if self.unsent:
            self.send(self.unsent)
            self.unsent = ""
        self.release()

    def release(self) -> None:
        """Stop watching the pipe (idempotent)."""
        if self.selector is not None:
            self.selector.close()
            self.selector = None
