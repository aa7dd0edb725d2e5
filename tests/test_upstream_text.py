"""Pixazo's own words about a failure reach operators only: callers, other callers, resources and the
gallery read the server's message."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx2
from pydantic import SecretStr

from app.pixazo.simulator import Fault, Simulator
from app.storage.records import MIGRATIONS, GenerationStore
from tests.conftest import TEST_KEY, http_client, live_server, make_settings, rows

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-fedcba9876543210xyz"
BODY = "GPU 7 on fire at /srv/model/ckpt.safetensors"
MESSAGE = "Pixazo answered HTTP 500: Pixazo failed on its side. You may try again in a minute."


async def test_upstream_bodies_never_reach_any_caller_but_stay_for_operators(tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE},bob:{BOB}"),
                             inline_image="none", max_retries=0)
    sim.push(Fault(kind="http", status=500, body=json.dumps({"error": f"{BODY} (key {TEST_KEY})"})))
    async with live_server(settings) as live:
        async with http_client(live, headers={"Authorization": f"Bearer {ALICE}"}) as alice:
            failed = await alice.call_tool("pix_generate", {"prompt": "will fail"})
        async with http_client(live, headers={"Authorization": f"Bearer {BOB}"}) as bob:
            got = await bob.call_tool("get_generation", {"id": 1})
            listed = await bob.call_tool("list_generations", {"status": "HTTP_500"})
            resource = await bob.read_resource("pixazo://generations/1")
        async with httpx2.AsyncClient(base_url=live.url, headers={"Authorization": f"Bearer {BOB}"}) as http:
            index = await http.get("/gallery")
            detail = await http.get("/gallery/1")
    seen = {
        "the caller's result": failed.content[0].text,
        "get_generation": json.dumps(got.structured_content),
        "list_generations": json.dumps(listed.structured_content),
        "the resource": resource.contents[0].text,  # type: ignore[union-attr]
        "the gallery": index.text,
        "the detail page": detail.text,
    }
    for where, text in seen.items():
        assert "GPU 7" not in text, where
        assert "safetensors" not in text, where
    assert MESSAGE in failed.content[0].text
    assert got.structured_content["error"] == MESSAGE
    assert "upstream_error" not in got.structured_content
    assert MESSAGE in detail.text
    (row,) = rows(settings.db_path)
    assert row["error"] == MESSAGE
    # operators keep Pixazo's words, with the key it echoed scrubbed out
    assert row["upstream_error"] == f"{BODY} (key [redacted])"


async def test_migration_moves_old_upstream_text_out_of_error(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:4]:
            conn.executescript(script)
        conn.execute("PRAGMA user_version = 4")
        conn.executemany(
            "INSERT INTO generations (timestamp, prompt, parameters_json, status, error, http_status)"
            " VALUES ('2026-01-01T00:00:00Z', ?, '{}', ?, ?, ?)",
            [("old failure", "HTTP_500", BODY, 500), ("old timeout", "TIMEOUT", "no answer", None)])
    conn.close()
    store = await GenerationStore.open(path)
    try:
        failure, timeout = await store.get(1), await store.get(2)
    finally:
        await store.close()
    assert failure is not None
    assert timeout is not None
    assert (failure.error, failure.upstream_error) == ("Pixazo answered HTTP 500.", BODY)
    assert BODY not in json.dumps(failure.public())
    assert (timeout.error, timeout.upstream_error) == ("no answer", None)
