"""`pixazo-mcp migrate ... --images-to s3://...`: a real history's images copied into a real S3-compatible
store (SeaweedFS) beside its rows in a real PostgreSQL; resumable, and every image verified by its hash."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app.pixazo.simulator import Simulator
from tests.conftest import in_memory_client, make_settings, rows
from tests.services import SeaweedS3


@pytest.fixture
def prefix() -> str:
    return f"migrated-{uuid.uuid4().hex[:12]}"


async def history_with_images(tmp_path: Path, sim: Simulator, count: int) -> list[dict[str, object]]:
    """A SQLite history made by the server itself, images in its local directory."""
    settings = make_settings(tmp_path, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        for i in range(count):
            result = await client.call_tool("pix_generate", {"prompt": f"to be moved {i}"})
            assert result.structured_content["status"] == "SUCCESS"
    return rows(settings.db_path)


def migrate(tmp_path: Path, postgres_url: str, s3: SeaweedS3, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIXAZO_IMAGE_DIR": str(tmp_path / "images"), "PIXAZO_SECRETS_DIR": str(tmp_path / "none"),
           **{k: v for k, v in s3.env(prefix).items() if k != "PIXAZO_IMAGE_STORE"}}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate", "--from", f"sqlite:///{tmp_path / 'pixazo.db'}",
         "--to", postgres_url, "--images-to", f"s3://{s3.bucket}/{prefix}"],
        capture_output=True, text=True, timeout=120, check=False, env=env, cwd=tmp_path)


def object_hash(s3: SeaweedS3, key: str) -> str:
    client = s3.client()
    try:
        return hashlib.sha256(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()).hexdigest()
    finally:
        client.close()


async def test_images_move_to_the_bucket_verified_and_a_rerun_copies_only_what_is_missing(
        tmp_path: Path, sim: Simulator, postgres_url: str, seaweed: SeaweedS3, prefix: str) -> None:
    history = await history_with_images(tmp_path, sim, 3)

    done = await asyncio.to_thread(migrate, tmp_path, postgres_url, seaweed, prefix)
    assert done.returncode == 0, done.stderr
    assert "copied 3 images (0 were already there)" in done.stdout
    assert "3 verified by their sha256" in done.stdout
    for row in history:
        assert object_hash(seaweed, f"{prefix}/{row['image_path']}") == row["image_sha256"]
    assert seaweed.secret_key not in done.stdout + done.stderr

    # Interrupted half-way, say: one image never made it. The rerun copies that one only.
    client = seaweed.client()
    client.delete_object(Bucket=seaweed.bucket, Key=f"{prefix}/{history[1]['image_path']}")
    client.close()
    again = await asyncio.to_thread(migrate, tmp_path, postgres_url, seaweed, prefix)
    assert again.returncode == 0, again.stderr
    assert "copied 0 generations (3 were already there)" in again.stdout
    assert "copied 1 images (2 were already there)" in again.stdout
    assert "3 verified by their sha256" in again.stdout
    assert len(seaweed.keys(prefix + "/")) == 3


async def test_an_image_that_does_not_match_its_row_fails_the_migration_and_is_not_kept(
        tmp_path: Path, sim: Simulator, postgres_url: str, seaweed: SeaweedS3, prefix: str) -> None:
    history = await history_with_images(tmp_path, sim, 2)
    damaged = tmp_path / "images" / str(history[0]["image_path"])
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")  # same size, other bytes
    (tmp_path / "images" / str(history[1]["image_path"])).unlink()  # and one lost

    done = await asyncio.to_thread(migrate, tmp_path, postgres_url, seaweed, prefix)
    assert done.returncode == 1
    assert f"image {history[0]['image_path']} does not match its row's sha256" in done.stderr
    assert f"image {history[1]['image_path']} is missing" in done.stderr
    assert seaweed.keys(prefix + "/") == []  # neither a wrong copy nor a partial one is left
    assert seaweed.uploads_in_progress(prefix + "/") == []
