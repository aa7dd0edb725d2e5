"""Benchmark: list_generations with a prompt query on a large history (default 1,000,000 rows).

    python benchmarks/history.py [--rows 1000000] [--db PATH]
    python benchmarks/history.py --database-url postgresql://USER:PASS@HOST:PORT/DB [--rows 1000000]

Builds (or reuses) a database of synthetic generations, then times list_generations through the
in-memory MCP client (the whole tool path: validation, FTS query, result schema) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from mcp import Client
from pydantic import SecretStr

from app.protocol.server import build_server
from app.settings import Settings
from app.storage.database import open_store, redacted
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


def synthetic_rows(rows: int) -> Iterator[tuple[str, str, str, str, str]]:
    """The same rows as `build` writes to SQLite (same seed, same order)."""
    rng = random.Random(7)  # noqa: S311 - synthetic data, not security
    for i in range(rows):
        yield ("2026-11-01T00:00:00Z", " ".join(rng.choices(WORDS, k=8)) + f" #{i}", '{"seed": 42}',
               f"https://pub-x.r2.dev/{i}.png", rng.choice(STATUSES))


async def build_postgres(url: str, rows: int) -> bool:
    """Fill an empty PostgreSQL history with the same synthetic rows (COPY); False if it already has them."""
    import psycopg

    store = await open_store(url)  # creates the current schema: tsvector column and GIN index included
    await store.close()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT COUNT(*) FROM generations")
        found = await cur.fetchone()
        if found is not None and found[0] >= rows:
            return False
        await conn.execute("TRUNCATE generations RESTART IDENTITY")
        async with conn.cursor() as cur, cur.copy(
                "COPY generations (timestamp, prompt, parameters_json, image_url, status) FROM STDIN") as copy:
            for row in synthetic_rows(rows):
                await copy.write_row(row)
        await conn.execute("VACUUM ANALYZE generations")
    return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", default=None,
                        help="postgresql://... to measure PostgreSQL (filled once with the same rows)")
    args = parser.parse_args()
    path = args.db or Path(tempfile.gettempdir()) / f"pixazo-history-{args.rows}.db"
    started = time.perf_counter()
    if args.database_url:
        where = redacted(args.database_url)
        if await build_postgres(args.database_url, args.rows):
            print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s at {where}")
    elif not path.exists():
        where = str(path)
        await build(path, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s at {path}")
    else:
        where = str(path)
    settings = Settings(_env_file=None, db_path=path, image_dir=path.parent / "bench-images",  # type: ignore[call-arg]
                        database_url=SecretStr(args.database_url) if args.database_url else None,
                        session_secret=SecretStr(secrets.token_hex(32)))
    cases = [
        ("newest 20, no query", {}),
        ("query: one common word", {"query": "fox"}),
        ("query: two words", {"query": "red lighthouse"}),
        ("query: rare (one row)", {"query": "#765432"}),
        ("query + status HTTP_429", {"query": "castle", "status": "HTTP_429"}),
        ("query, page 50 (before_id)", {"query": "fox", "before_id": 100_000}),
        ("query: no match", {"query": "giraffe"}),
        ("query: common word + no match", {"query": "fox giraffe"}),
        ("query: common word + rare", {"query": "photo #765432"}),
        ("query + caller with no rows", {"query": "fox", "caller": "nobody"}),
    ]
    engine = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\nlist_generations on {args.rows:,} rows, {engine} at {where} "
          f"(in-memory MCP client, {args.repeat} runs each)\n")
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
