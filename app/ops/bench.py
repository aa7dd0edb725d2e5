"""`pixazo-mcp bench`: throughput and overhead, measured side by side with two yardsticks.

Starts the simulator (real-size images: 1024x1024 PNGs of about 1.6 MB) at a fixed latency and the
servers as real processes on loopback: pixazo-mcp, the plain keeper (keeps each image the obvious
way) and the minimal reference (keeps nothing); see `app.ops.bench_reference`. Drives them with the
MCP SDK's client (S sessions, C calls in flight, N calls), and reports wall time against the ideal
(N / C x latency), throughput, the latency each server adds over the simulated one, the CPU time per
call of the server process alone, its peak RSS, the rows it wrote and the images it kept whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from app.core.metrics import STAGES
from app.ops.bench_images import image_costs, provenance_pieces, render_costs
from app.pixazo.renders import LOOKS

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    server: str
    calls: int
    concurrency: int
    sessions: int
    latency_s: float
    wall_s: float
    ideal_s: float
    throughput: float
    added_p50_ms: float
    added_p95_ms: float
    added_p99_ms: float
    cpu_ms_per_call: float | None
    peak_rss_mb: float | None
    errors: int
    rows: int | None
    kept: int | None = None  # rows whose image is on disk at its recorded size
    images: str = "noise"  # the simulator's look (renders.LOOKS)
    stages: dict[str, float] | None = None  # our server: mean ms per call in each stage, from its /metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _wait_for(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx2.AsyncClient() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")
            with suppress(httpx2.HTTPError):
                await http.get(url, timeout=1)
                return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


@asynccontextmanager
async def _process(argv: list[str], env: dict[str, str], probe: str, what: str) -> Any:
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,  # noqa: S603, ASYNC220
                            stderr=subprocess.DEVNULL)
    try:
        await _wait_for(probe, proc, what)
        yield proc
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 40)
        except subprocess.TimeoutExpired:
            proc.kill()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def drive(url: str, calls: int, concurrency: int, sessions: int,
                token: str | None = None) -> tuple[list[float], int, float]:
    """N calls, C at once, spread over S SDK client sessions. Returns (latencies, errors, wall)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(sessions):
            http = await stack.enter_async_context(httpx2.AsyncClient(
                headers=headers, limits=limits, timeout=httpx2.Timeout(60, read=600)))
            client = await stack.enter_async_context(Client(streamable_http_client(url + "/mcp", http_client=http)))
            await client.list_tools()  # as agents do; also lets the client check structured results
            clients.append(client)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            nonlocal errors
            async with gate:
                started = time.perf_counter()
                try:
                    result = await clients[i % sessions].call_tool("pix_generate", {"prompt": f"bench {i}"})
                except Exception:  # noqa: BLE001 - every failure is counted, none stops the run
                    errors += 1
                    return
                latencies.append(time.perf_counter() - started)
                if result.is_error:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        wall = time.perf_counter() - started
    return latencies, errors, wall


def _summarize(server: str, calls: int, concurrency: int, sessions: int, latency: float,
               lat: list[float], errors: int, wall: float, cpu: float | None, rss: float | None,
               rows: int | None) -> Result:
    added = [(x - latency) * 1000 for x in lat]
    ideal = -(-calls // concurrency) * latency
    return Result(server, calls, concurrency, sessions, latency, round(wall, 3), round(ideal, 3),
                  round(calls / wall, 1), round(_percentile(added, 0.5), 1), round(_percentile(added, 0.95), 1),
                  round(_percentile(added, 0.99), 1),
                  None if cpu is None else round(cpu * 1000 / calls, 2), None if rss is None else round(rss, 1),
                  errors, rows)


SERVERS = ("pixazo-mcp", "plain-keeper", "reference")


def _kept(db: Path, query: str, root: Path | None) -> tuple[int, int]:
    """(rows, rows whose file exists with the recorded size), from the server's own database."""
    with sqlite3.connect(db) as conn:
        found = conn.execute(query).fetchall()
    conn.close()
    whole = 0
    for path, size in found:
        if path is None:
            continue
        file = Path(path) if root is None else root / path
        with suppress(OSError):
            whole += file.stat().st_size == size
    return len(found), whole


# What our server's /metrics times (besides the client's view): the stages of app.core.metrics, the
# wait for a slot to call Pixazo and Pixazo itself.
TIMED = {"slot wait": "pixazo_queue_wait_seconds", "Pixazo": "pixazo_upstream_latency_seconds",
         **{stage: f'pixazo_stage_seconds{{stage="{stage}"}}' for stage in STAGES}}


async def timings(url: str, token: str | None = None) -> dict[str, tuple[float, int]] | None:
    """(seconds, count) of each timed stage so far, from the server's /metrics; None when it does not say."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx2.AsyncClient(timeout=10, headers=headers) as http:
            answer = await http.get(url + "/metrics")
    except httpx2.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    found: dict[str, tuple[float, int]] = {}
    for name, metric in TIMED.items():
        base, _, labels = metric.partition("{")
        label = "{" + labels if labels else ""
        total = re.search(rf"^{re.escape(base)}_sum{re.escape(label)} ([0-9.e+-]+)$", answer.text, re.M)
        count = re.search(rf"^{re.escape(base)}_count{re.escape(label)} ([0-9.e+-]+)$", answer.text, re.M)
        if total and count:
            found[name] = (float(total[1]), int(float(count[1])))
    return found


def stage_means(before: dict[str, tuple[float, int]] | None, after: dict[str, tuple[float, int]] | None,
                calls: int) -> dict[str, float] | None:
    """Mean ms per call spent in each stage between two readings (a stage a call skipped counts 0)."""
    if before is None or after is None:
        return None
    return {name: round((after[name][0] - before.get(name, (0.0, 0))[0]) * 1000 / calls, 1)
            for name in TIMED if name in after}


async def bench_one(server: str, sim_url: str, calls: int, concurrency: int, sessions: int, latency: float,
                    work: Path, extra_env: dict[str, str] | None = None, look: str = "noise") -> Result:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    warm = min(20, calls)
    images = work / f"images-{port}"
    if server == "pixazo-mcp":
        db: Path | None = work / f"bench-{port}.db"
        argv = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
        env = {"PIXAZO_API_KEY": "bench-key", "PIXAZO_BASE_URL": sim_url, "PIXAZO_DB_PATH": str(db),
               "PIXAZO_IMAGE_DIR": str(images), "PIXAZO_ALLOWED_IMAGE_HOSTS": "127.0.0.1",
               "PIXAZO_MAX_CONCURRENCY": str(max(concurrency, 32)), "PIXAZO_LOG_FORMAT": "json",
               # The crowd is one anonymous caller standing for many agents: lift the bound on one
               # caller's unfinished calls (16 by default), as the plain keeper has none.
               "PIXAZO_MAX_BACKGROUND_PER_CALLER": str(max(calls, concurrency, 16)),
               "PIXAZO_SECRETS_DIR": str(work / "no-secrets"), **(extra_env or {})}
        query, root = "SELECT image_path, image_bytes FROM generations", images
    elif server == "plain-keeper":
        db = images / "keeper.db"
        argv = [sys.executable, "-m", "app.ops.bench_reference", "--port", str(port), "--upstream", sim_url,
                "--keep", str(images)]
        env = {}
        query, root = "SELECT path, bytes FROM generations", None
    else:
        db = None
        argv = [sys.executable, "-m", "app.ops.bench_reference", "--port", str(port), "--upstream", sim_url]
        env = {}
    stages = None
    async with _process(argv, env, url + "/mcp", server) as proc:
        await drive(url, warm, min(20, concurrency), 1)  # warm-up, not counted
        before = await timings(url) if server == "pixazo-mcp" else None
        cpu_before = _cpu_seconds(proc.pid)
        lat, errors, wall = await drive(url, calls, concurrency, sessions)
        cpu = _cpu_seconds(proc.pid) - cpu_before
        rss = _peak_rss_mb(proc.pid)
        if before is not None:
            stages = stage_means(before, await timings(url), calls)
    rows = kept = None
    if db is not None:
        rows, kept = await asyncio.to_thread(_kept, db, query, root)
        rows, kept = rows - warm, kept - warm
    result = _summarize(server, calls, concurrency, sessions, latency, lat, errors, wall, cpu, rss, rows)
    return replace(result, kept=kept, images=look, stages=stages)


async def upstream_seconds(url: str, token: str | None) -> tuple[float, int] | None:
    """(seconds, attempts) the server has spent waiting for Pixazo, from its own /metrics; None when it
    does not say (no /metrics, or no access)."""
    found = await timings(url, token)
    return None if found is None else found.get("Pixazo")


async def bench_url(url: str, calls: int, concurrency: int, sessions: int, latency: float,
                    token: str | None) -> Result:
    """A running server: the upstream's latency is measured (the server's own histogram, before and
    after), not assumed, so that "added" is what the server adds. Without /metrics it is the given one."""
    base = url.rstrip("/").removesuffix("/mcp")  # its address, or its /mcp endpoint
    before = await upstream_seconds(base, token)
    lat, errors, wall = await drive(base, calls, concurrency, sessions, token)
    after = await upstream_seconds(base, token)
    if before is not None and after is not None and after[1] > before[1]:
        latency = (after[0] - before[0]) / (after[1] - before[1])
        print(f"upstream latency measured by the server: {latency * 1000:.0f} ms a call", file=sys.stderr)
    else:
        print(f"upstream latency not measured (no /metrics): assuming --latency {latency:g} s", file=sys.stderr)
    # Its images are whatever its upstream makes: not one of the simulator's looks.
    return replace(_summarize(base, calls, concurrency, sessions, round(latency, 3), lat, errors, wall, None, None,
                              None), images="-")


def _first_line(exc: BaseException) -> str:
    """What went wrong, in one line (an ExceptionGroup's first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def median_round(rounds: list[Result]) -> Result:
    """The round with the median wall time; errors summed over all rounds, so none can hide."""
    chosen = sorted(rounds, key=lambda r: r.wall_s)[len(rounds) // 2]
    return replace(chosen, errors=sum(r.errors for r in rounds))


def render(results: list[Result]) -> str:
    head = ("| images | server | calls | at once | wall s | ideal s | calls/s | added p50 ms | p95 ms | p99 ms "
            "| CPU ms/call | peak RSS MB | errors | rows | kept whole |")
    lines = [head, "|" + "---|" * 15]
    for r in results:
        lines.append(
            f"| {r.images} | {r.server} | {r.calls} | {r.concurrency} | {r.wall_s} | {r.ideal_s} | {r.throughput} "
            f"| {r.added_p50_ms} | {r.added_p95_ms} | {r.added_p99_ms} | {_shown(r.cpu_ms_per_call)} "
            f"| {_shown(r.peak_rss_mb)} "
            f"| {r.errors} | {'-' if r.rows is None else r.rows} | {'-' if r.kept is None else r.kept} |")
    for mine in (r for r in results if r.server == "pixazo-mcp"):
        same = {r.server: r for r in results if r.concurrency == mine.concurrency and r.calls == mine.calls
                and r.images == mine.images}
        notes = []
        keeper, ref = same.get("plain-keeper"), same.get("reference")
        if keeper is not None and mine.cpu_ms_per_call and keeper.cpu_ms_per_call and mine.peak_rss_mb \
                and keeper.peak_rss_mb:
            notes.append(f"CPU per call {mine.cpu_ms_per_call / keeper.cpu_ms_per_call:.2f}x and peak RSS "
                         f"{mine.peak_rss_mb / keeper.peak_rss_mb:.2f}x the plain keeper's")
        if keeper is not None:
            notes.append(f"wall {mine.wall_s / keeper.wall_s:.2f}x the plain keeper's")
        if ref is not None and mine.cpu_ms_per_call is not None and ref.cpu_ms_per_call is not None:
            notes.append(f"CPU per call {mine.cpu_ms_per_call - ref.cpu_ms_per_call:+.2f} ms "
                         f"({mine.cpu_ms_per_call / ref.cpu_ms_per_call:.2f}x) and wall "
                         f"{mine.wall_s / ref.wall_s:.2f}x the minimal reference's")
        if notes:
            lines.append(f"\n{mine.images} images, C={mine.concurrency}: " + "; ".join(notes))
    staged = [r for r in results if r.stages]
    if staged:
        names = list(TIMED)
        lines += ["", "Where pixazo-mcp's time went, mean ms per call (from its /metrics; stages overlap "
                  "other calls' work):", "",
                  "| images | at once | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        lines += [f"| {r.images} | {r.concurrency} | " + " | ".join(str((r.stages or {}).get(n, "-")) for n in names)
                  + " |" for r in staged]
    return "\n".join(lines)


def _shown(value: float | None) -> str:
    return "not measured" if value is None else str(value)


def machine() -> str:
    """What the figures were measured on: cores and the load average when the run began."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load} at the start"


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if r.images == results[0].images]  # one look per chart
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style, color in (("pixazo-mcp", "o-", "tab:blue"), ("plain-keeper", "^-.", "tab:green"),
                               ("reference", "s--", "tab:orange")):
        series = sorted((r for r in results if r.server == name), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in series]
        left.plot(xs, [r.throughput for r in series], style, color=color, label=name)
        right.plot(xs, [r.added_p50_ms for r in series], style, color=color, label=f"{name} p50")
        right.plot(xs, [r.added_p95_ms for r in series], style, color=color, alpha=0.4, label=f"{name} p95")
    left.plot(xs, [c / results[0].latency_s for c in xs], ":", color="grey", label="ideal (C / latency)")
    left.set(xlabel="calls in flight", ylabel="calls/s", title="Throughput")
    right.set(xlabel="calls in flight", ylabel="ms over the simulated latency", title="Added latency")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"pixazo-mcp vs a plain image keeper and a minimal MCP server, "
                 f"{results[0].latency_s:g} s simulated latency, {results[0].images} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


async def run(args: Any) -> int:
    if args.url:
        try:
            results = [await bench_url(args.url, args.calls, args.concurrency, args.sessions, args.latency,
                                       args.token)]
        except Exception as exc:  # noqa: BLE001 - an operator's command: one line, not a traceback
            print(f"pixazo-mcp bench: {args.url}: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
            return 1
    else:
        sweep = [int(c) for c in args.sweep.split(",")] if args.sweep else [args.concurrency]
        servers = [s for s in SERVERS if not (s != "pixazo-mcp" and args.no_reference)
                   and not (s == "plain-keeper" and args.no_keeper)]
        print(f"machine: {machine()}", file=sys.stderr, flush=True)
        looks = [look.strip() for look in args.images.split(",") if look.strip()]
        if not looks or set(looks) - set(LOOKS):
            print(f"pixazo-mcp bench: --images takes a comma list of {', '.join(LOOKS)}", file=sys.stderr)
            return 2
        results = []
        with tempfile.TemporaryDirectory(prefix="pixazo-bench-") as tmp:
            work = Path(tmp)
            extra = dict(item.split("=", 1) for item in args.server_env)
            for look in looks:
                sim_port = _free_port()
                sim_url = f"http://127.0.0.1:{sim_port}"
                argv = [sys.executable, "-m", "app.cli", "simulator", "--port", str(sim_port),
                        "--latency", str(args.latency), "--images", look]
                async with _process(argv, {}, sim_url + "/_sim/stats", "simulator"):
                    for concurrency in sweep:
                        calls = args.calls if not args.sweep else max(args.calls, concurrency * 2)
                        rounds: dict[str, list[Result]] = {server: [] for server in servers}
                        # Rounds alternate the servers, so a noisy neighbour hits both alike.
                        for _ in range(max(1, args.repeat)):
                            for server in servers:
                                result = await bench_one(server, sim_url, calls, concurrency, args.sessions,
                                                         args.latency, work, extra, look)
                                rounds[server].append(result)
                                print(f"  {look} images, {server}: {calls} calls at {concurrency}: "
                                      f"{result.wall_s} s, {result.cpu_ms_per_call} ms CPU/call, "
                                      f"{result.errors} errors", file=sys.stderr, flush=True)
                        results.extend(median_round(rounds[server]) for server in servers)
            if not args.no_image_costs:
                costs = await asyncio.to_thread(image_costs, [look for look in looks if look != "tiny"], 7,
                                                provenance_pieces(work))
                if costs:
                    print(render_costs(costs) + "\n")
    print(render(results))
    await asyncio.to_thread(_write_outputs, results, args.json, args.chart)
    return 1 if any(r.errors for r in results) else 0


def _write_outputs(results: list[Result], json_path: str | None, chart_path: str | None) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in results], indent=2))
    if chart_path:
        chart(results, Path(chart_path))

