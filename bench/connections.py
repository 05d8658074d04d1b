"""Scrapes beside hostile connections: /metrics latency of a real ``runwatch serve`` at
rest, beside 1,100 idle sockets, and during a flood of wrong passwords, for this tree and
an earlier commit, side by side in one run; writes its section of bench/RESULTS.md.

Each case starts a fresh ``runwatch serve`` from each tree, the trees in turn (the other
one first in the next round, so a noisy machine slows both alike) (the baseline is a ``git
worktree`` of ``--baseline``, run with the same Python and packages; the bench checks that
it imports from there), under a soft open-file limit of 1024 (the hard limit left as it
is), as a systemd unit without ``LimitNOFILE`` runs it. Cases:

* quiet: nothing else;
* idle: 1,100 sockets connected that send nothing;
* wrong passwords: basic auth on, 100 clients sending a new wrong password each time,
  back to back on kept-alive connections; the scrapes carry the right one (checked once
  before the flood, as a Prometheus already scraping has).

/metrics is scraped every 50 ms, each scrape on a new connection; one that takes longer
than ``--timeout`` counts as that long (a lower bound). Also counted: the lines the server
logged meanwhile.

    python bench/connections.py [--baseline e10cab2] [--rounds 2] [--seconds 4]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import resource
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_section
from bench.run import cpu_model, percentile
from bench.trees import ROOT, baseline_worktree, serve
from tests.peers import Flood

IDLE_SOCKETS = 1100
FLOOD_CLIENTS = 100
USER, PASSWORD = "prometheus", "right"
CASES = ("quiet", "idle", "wrong passwords")


@dataclass
class Result:
    took: list[float]  # seconds per scrape
    timed_out: int
    log_lines: int


def soft_limit_1024() -> None:
    """In the server's process: the soft open-file limit of a unit without LimitNOFILE."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def scrapes(url: str, seconds: float, timeout: float, auth: tuple[str, str] | None) -> Result:
    took, timed_out = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            response = httpx.get(url + "/metrics", auth=auth, timeout=timeout)
            response.raise_for_status()
            took.append(time.perf_counter() - started)
        except httpx.TimeoutException:
            took.append(timeout)
            timed_out += 1
        time.sleep(0.05)
    return Result(took, timed_out, 0)


def wrong_password(index: int, sent: int) -> bytes:
    token = base64.b64encode(f"{USER}:wrong-{index}-{sent}".encode()).decode()
    return f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n\r\n".encode()


def measure(case: str, tree: Path, work: Path, seconds: float, timeout: float) -> Result:
    log = work / f"{case.replace(' ', '-')}-{tree.name}.log"
    args, auth = [], None
    if case == "wrong passwords":
        config = work / "web.yml"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
        config.write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
        args, auth = ["--web.config.file", str(config)], (USER, PASSWORD)
    with serve(tree, args, log, preexec_fn=soft_limit_1024) as served:
        url = served.url
        if auth is not None:  # the right password checked once, as a running Prometheus has
            httpx.get(url + "/metrics", auth=auth, timeout=30).raise_for_status()
        before = len(log.read_bytes().splitlines())
        port = int(url.rsplit(":", 1)[1])
        idle: list[socket.socket] = []
        flood = None
        try:
            if case == "idle":
                idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(IDLE_SOCKETS)]
            elif case == "wrong passwords":
                flood = Flood(port, FLOOD_CLIENTS, wrong_password)
                time.sleep(1)  # under way
            result = scrapes(url, seconds, timeout, auth)
        finally:
            if flood is not None:
                flood.stop()
            for sock in idle:
                sock.close()
        result.log_lines = len(log.read_bytes().splitlines()) - before
    return result


def milliseconds(result: Result, q: float) -> str:
    value = 1000 * percentile(result.took, q)
    return f"≥ {value:.0f}" if result.timed_out and q == 0.99 else f"{value:.0f}"


def report(
    baseline: str, results: dict[str, dict[str, Result]], timeout: float, rounds: int
) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Written by `python bench/connections.py --baseline {baseline} --rounds {rounds}` "
        f"on {now}.",
        f"Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}.",
        "",
        "## Scrapes beside hostile connections",
        "",
        "A fresh `runwatch serve` per case and tree, under a soft open-file limit of 1024 "
        "(the hard one as it was), as a systemd unit without `LimitNOFILE` runs it; /metrics "
        "scraped every 50 ms, each on a new connection. quiet: nothing else; idle: "
        f"{IDLE_SOCKETS:,} sockets connected that send nothing; wrong passwords: basic auth, "
        f"{FLOOD_CLIENTS} clients sending a new wrong password each time, back to back, the "
        f"scrapes carrying the right one. A scrape over {timeout:g} s counts as {timeout:g} s "
        f"(a lower bound, marked ≥). `{baseline}` is the code before the fix; `this tree` "
        "closes idle connections past --max-connections (512) and request heads slower than "
        "--header-timeout, raises the soft open-file limit, and checks passwords in a thread "
        "of their own (429 past 8 waiting). Trees alternated, "
        f"{rounds} rounds; log lines: what the server wrote meanwhile, in all.",
        "",
        f"| case | {baseline} scrapes (timed out) | p50 / p99 ms | log lines | this tree "
        "scrapes (timed out) | p50 / p99 ms | log lines | p99 before / after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case, by_tree in results.items():
        before, after = by_tree[baseline], by_tree["this tree"]
        ratio = percentile(before.took, 0.99) / percentile(after.took, 0.99)
        cells = []
        for result in (before, after):
            cells += [f"{len(result.took)} ({result.timed_out})",
                      f"{milliseconds(result, 0.5)} / {milliseconds(result, 0.99)}",
                      f"{result.log_lines:,}"]  # fmt: skip
        bound = "≥ " if before.timed_out else ""
        lines.append(f"| {case} | {' | '.join(cells)} | {bound}{ratio:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="e10cab2", help="git commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="scraping per case, tree, round")
    parser.add_argument("--timeout", type=float, default=10.0, help="longest a scrape may take")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # this side holds the sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * IDLE_SOCKETS)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with baseline_worktree(args.baseline, work) as worktree:
            trees = {args.baseline: worktree, "this tree": ROOT}
            results = {case: {name: Result([], 0, 0) for name in trees} for case in CASES}
            for round_ in range(args.rounds):
                for case in CASES:
                    for name in sorted(trees, reverse=bool(round_ % 2)):
                        result = measure(case, trees[name], work, args.seconds, args.timeout)
                        merged = results[case][name]
                        merged.took += result.took
                        merged.timed_out += result.timed_out
                        merged.log_lines += result.log_lines
    text = report(args.baseline, results, args.timeout, args.rounds)
    write_section("bench/connections.py", text)
    print(text)


if __name__ == "__main__":
    main()
