"""The benchmark runs end to end (briefly), so that it cannot rot. It measures; it asserts no speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_runs_the_three_servers_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        # More calls at once than one caller may have unfinished by default (16): the crowd is one
        # anonymous caller standing for many agents.
        [sys.executable, "-m", "app.cli", "bench", "--calls", "40", "--concurrency", "20", "--sessions", "2",
         "--latency", "0.5", "--json", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| pixazo-mcp | 40 | 20 |" in proc.stdout
    assert "| plain-keeper | 40 | 20 |" in proc.stdout
    assert "| reference | 40 | 20 |" in proc.stdout
    assert "the plain keeper's" in proc.stdout
    assert "the minimal reference's" in proc.stdout
    results = {r["server"]: r for r in json.loads(out.read_text())}
    assert results["pixazo-mcp"]["errors"] == 0
    assert results["pixazo-mcp"]["rows"] == 40
    assert results["pixazo-mcp"]["kept"] == 40  # every image on disk, whole
    assert results["plain-keeper"]["errors"] == 0
    assert results["plain-keeper"]["kept"] == 40
    assert results["reference"]["errors"] == 0
    assert results["pixazo-mcp"]["cpu_ms_per_call"] > 0
    assert results["pixazo-mcp"]["peak_rss_mb"] > 0
