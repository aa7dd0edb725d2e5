"""The container test's remote agent: generate through /mcp, then (after a restart) find it again."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(mode: str, url: str, token: str, state_file: Path) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        async with httpx2.AsyncClient() as anonymous:
            unauthorized = await anonymous.post(url + "/mcp", json={})
        assert unauthorized.status_code == 401, unauthorized.status_code
        async with Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
            if mode == "generate":
                result = await client.call_tool("pix_generate", {"prompt": "a container ship at dawn"})
                assert not result.is_error, result.content
                sc = result.structured_content
                assert sc["status"] == "SUCCESS", sc
                blob = (await client.read_resource(sc["resource_uri"])).contents[0]
                digest = hashlib.sha256(base64.b64decode(blob.blob)).hexdigest()
                state_file.write_text(json.dumps({"id": sc["id"], "sha256": digest}))
                print(f"generated {sc['id']} ({digest[:12]}) through the container")
                return
            saved = json.loads(state_file.read_text())
            row = (await client.call_tool("get_generation", {"id": saved["id"]})).structured_content
            assert row["status"] == "SUCCESS", row
            assert row["caller"] == "ci", row
            assert row["image_sha256"] == saved["sha256"], row
        image = await http.get(f"{url}/images/{saved['id']}")
        assert image.status_code == 200
        assert hashlib.sha256(image.content).hexdigest() == saved["sha256"]
        print(f"generation {saved['id']} and its image survived the restart")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])))
