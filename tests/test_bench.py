"""The benchmark runs end to end (briefly), so that it cannot rot. It measures; it asserts no speed."""

from __future__ import annotations

import json
import re
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
    for look in ("photo", "noise"):  # both looks of real-size images, side by side
        for server in ("pixazo-mcp", "plain-keeper", "reference"):
            assert f"| {look} | {server} | 40 | 20 |" in proc.stdout
        assert f"{look} images, C=20: CPU per call" in proc.stdout
    assert "the plain keeper's" in proc.stdout
    assert "the minimal reference's" in proc.stdout
    # The per-image figures, both ways, and where our server's time went, stage by stage.
    assert re.search(r"^\| thumbnail, libvips \(ours\) \| [0-9.]+ \| [0-9.]+ \|$", proc.stdout, re.M)
    assert re.search(r"^\| thumbnail, Pillow \(draft, reduce\) \| [0-9.]+ \| [0-9.]+ \|$", proc.stdout, re.M)
    stages = re.search(r"^\| photo \| 20 \| ([0-9. |]+)$", proc.stdout, re.M)
    assert stages is not None, proc.stdout
    assert len(stages[1].split("|")) == 9  # slot wait, Pixazo and the six stages, each a figure
    everything = json.loads(out.read_text())
    assert {(r["images"], r["server"]) for r in everything} == {
        (look, server) for look in ("photo", "noise") for server in ("pixazo-mcp", "plain-keeper", "reference")}
    assert all(r["stages"]["thumbnail"] > 0 for r in everything if r["server"] == "pixazo-mcp")
    results = {r["server"]: r for r in everything if r["images"] == "photo"}
    assert results["pixazo-mcp"]["errors"] == 0
    assert results["pixazo-mcp"]["rows"] == 40
    assert results["pixazo-mcp"]["kept"] == 40  # every image on disk, whole
    assert results["plain-keeper"]["errors"] == 0
    assert results["plain-keeper"]["kept"] == 40
    assert results["reference"]["errors"] == 0
    assert results["pixazo-mcp"]["cpu_ms_per_call"] > 0
    assert results["pixazo-mcp"]["peak_rss_mb"] > 0
