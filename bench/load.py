"""HTTP load with wrk (a separate process, so the load generator does not share the server's GIL)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    url: str
    requests_per_second: float
    p99_ms: float
    errors: int

    def line(self, label: str) -> str:
        return f"{label:<34} {self.requests_per_second:>9.0f} req/s   p99 {self.p99_ms:>7.1f} ms   errors {self.errors}"


def _to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str, *, connections: int = 32, seconds: int = 10, threads: int = 1, script: str | None = None
) -> LoadResult:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", script]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"99%\s+([\d.]+(?:us|ms|s))", output).group(1))  # type: ignore[union-attr]
    errors = 0
    for match in re.finditer(
        r"Non-2xx or 3xx responses:\s+(\d+)|Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        output,
    ):
        errors += sum(int(g) for g in match.groups() if g)
    return LoadResult(url=url, requests_per_second=rate, p99_ms=p99, errors=errors)


def interleaved(runs: dict[str, dict[str, object]], *, rounds: int = 3) -> dict[str, LoadResult]:
    """Run each labelled wrk load in turn, `rounds` times, and keep each one's median round.

    Interleaving spreads the machine's drift (other load, CPU steal) over both sides of a ratio.
    """
    results: dict[str, list[LoadResult]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, kwargs in runs.items():
            results[label].append(wrk(**kwargs))  # type: ignore[arg-type]
    medians = {}
    for label, measured in results.items():
        ordered = sorted(measured, key=lambda r: r.requests_per_second)
        medians[label] = ordered[len(ordered) // 2]
        spread = ", ".join(f"{r.requests_per_second:.0f}" for r in measured)
        print(f"  {label}: rounds {spread} req/s")
    return medians
