"""The README's Python snippet runs as pasted, against a live server (issue 11, point 14)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer

README = Path(__file__).parent.parent / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


async def test_the_readme_python_snippet_runs_as_pasted(live: LiveServer, tmp_path: Path) -> None:
    (snippet,) = python_snippets()
    assert "http://127.0.0.1:8000/mcp" in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("http://127.0.0.1:8000/mcp", live.mcp_url))  # only the port differs
    done = await asyncio.to_thread(subprocess.run, [sys.executable, str(script)], capture_output=True, text=True,
                                   timeout=90, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Generated image 1: http"), done.stdout
