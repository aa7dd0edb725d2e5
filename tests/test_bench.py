"""The benchmark runs end to end (briefly), so that it cannot rot. It measures; it asserts no speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_runs_the_three_servers_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--calls", "6", "--concurrency", "3", "--sessions", "2",
         "--latency", "0.05", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| pixazo-mcp | 6 | 3 |" in proc.stdout
    assert "| plain-keeper | 6 | 3 |" in proc.stdout
    assert "| reference | 6 | 3 |" in proc.stdout
    assert "the plain keeper's" in proc.stdout
    assert "the minimal reference's" in proc.stdout
    results = {r["server"]: r for r in json.loads(out.read_text())}
    assert results["pixazo-mcp"]["errors"] == 0
    assert results["pixazo-mcp"]["rows"] == 6
    assert results["pixazo-mcp"]["kept"] == 6  # every image on disk, whole
    assert results["plain-keeper"]["errors"] == 0
    assert results["plain-keeper"]["kept"] == 6
    assert results["reference"]["errors"] == 0
    assert results["pixazo-mcp"]["cpu_ms_per_call"] > 0
    assert results["pixazo-mcp"]["peak_rss_mb"] > 0
