"""pixazo-mcp backup: a consistent copy while the server writes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from app.pixazo.simulator import Simulator
from tests.conftest import http_client, live_server, make_settings, rows


async def test_backup_under_write_load_is_consistent(tmp_path: Path) -> None:
    async with Simulator(latency=0.05) as sim:
        settings = make_settings(tmp_path, sim.url, inline_image="none")
        async with live_server(settings) as live, http_client(live) as client:
            stop = asyncio.Event()

            async def writer(n: int) -> int:
                made = 0
                while not stop.is_set():
                    await client.call_tool("pix_generate", {"prompt": f"load {n}-{made}"})
                    made += 1
                return made

            writers = [asyncio.create_task(writer(n)) for n in range(8)]
            while len(rows(settings.db_path)) < 40:
                await asyncio.sleep(0.05)
            copies = []
            for i in range(3):
                dest = tmp_path / "backups" / f"copy-{i}.db"
                proc = await asyncio.to_thread(
                    subprocess.run, [sys.executable, "-m", "app.cli", "backup", str(dest), "--db",
                                     str(settings.db_path)], capture_output=True, text=True, timeout=60)
                assert proc.returncode == 0, proc.stderr
                assert "backed up" in proc.stdout
                copies.append(dest)
            stop.set()
            await asyncio.gather(*writers)
    check_copies(copies, len(rows(settings.db_path)))


def check_copies(copies: list[Path], final: int) -> None:
    previous = 0
    for dest in copies:
        with sqlite3.connect(dest) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            ids = [r[0] for r in conn.execute("SELECT id FROM generations ORDER BY id")]
            assert conn.execute("PRAGMA user_version").fetchone()[0] >= 4
        conn.close()
        assert ids == list(range(1, len(ids) + 1))  # a prefix of the history: no holes, nothing torn
        assert previous <= len(ids) <= final
        previous = len(ids)
        assert not Path(str(dest) + "-wal").exists()
    assert previous > 40


def test_backup_of_a_missing_database_fails_clearly(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "backup", str(tmp_path / "out.db"), "--db",
                           str(tmp_path / "nope.db")], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "no database at" in proc.stderr
