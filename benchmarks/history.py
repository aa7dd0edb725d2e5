"""Benchmark: list_generations with a prompt query on a large history (default 1,000,000 rows).

    python benchmarks/history.py [--rows 1000000] [--db PATH]

Builds (or reuses) a database of synthetic generations, then times list_generations through the
in-memory MCP client (the whole tool path: validation, FTS query, result schema) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from mcp import Client

from app.protocol.server import build_server
from app.settings import Settings
from app.storage.records import GenerationStore

WORDS = [
    "red", "fox", "whale", "castle", "harbour", "lighthouse", "forest", "dawn", "neon", "city",
    "portrait", "cat", "dog", "mountain", "river", "storm", "desert", "robot", "dragon", "garden",
    "winter", "summer", "ocean", "galaxy", "train", "bridge", "market", "festival", "watercolor",
    "oil", "sketch", "photo", "cinematic", "minimal", "vintage", "futuristic",
]
STATUSES = ["SUCCESS"] * 17 + ["HTTP_500", "HTTP_429", "TIMEOUT"]


async def build(path: Path, rows: int) -> None:
    store = await GenerationStore.open(path)  # creates the current schema, FTS triggers included
    await store.close()
    rng = random.Random(7)  # noqa: S311 - synthetic data, not security
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        batch = 50_000
        for start in range(0, rows, batch):
            conn.executemany(
                "INSERT INTO generations (timestamp, prompt, parameters_json, image_url, status)"
                " VALUES (?, ?, ?, ?, ?)",
                [("2026-11-01T00:00:00Z", " ".join(rng.choices(WORDS, k=8)) + f" #{i}", '{"seed": 42}',
                  f"https://pub-x.r2.dev/{i}.png", rng.choice(STATUSES))
                 for i in range(start, min(rows, start + batch))],
            )
            conn.commit()
    conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    path = args.db or Path(tempfile.gettempdir()) / f"pixazo-history-{args.rows}.db"
    if not path.exists():
        started = time.perf_counter()
        await build(path, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s at {path}")
    settings = Settings(_env_file=None, db_path=path, image_dir=path.parent / "bench-images")  # type: ignore[call-arg]
    cases = [
        ("newest 20, no query", {}),
        ("query: one common word", {"query": "fox"}),
        ("query: two words", {"query": "red lighthouse"}),
        ("query: rare (one row)", {"query": "#765432"}),
        ("query + status HTTP_429", {"query": "castle", "status": "HTTP_429"}),
        ("query, page 50 (before_id)", {"query": "fox", "before_id": 100_000}),
        ("query: no match", {"query": "giraffe"}),
    ]
    print(f"\nlist_generations on {args.rows:,} rows (in-memory MCP client, {args.repeat} runs each)\n")
    print("| case | p50 ms | p95 ms | rows |\n|---|---:|---:|---:|")
    async with Client(build_server(settings)) as client:
        for label, arguments in cases:
            times, count = [], 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                result = await client.call_tool("list_generations", arguments)
                times.append((time.perf_counter() - started) * 1000)
                count = len(result.structured_content["generations"])
            times.sort()
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"| {label} | {statistics.median(times):.1f} | {p95:.1f} | {count} |")


if __name__ == "__main__":
    asyncio.run(main())
