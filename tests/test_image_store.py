"""PIXAZO_IMAGE_STORE picks where images live: with s3://BUCKET/PREFIX they stream into a real
S3-compatible store (SeaweedFS) and every reader (the /images route, the image resource, thumbnails,
the gallery) reads them back from there; /healthz reports the store."""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

import httpx2
import pytest
from pydantic import SecretStr, ValidationError

from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import in_memory_client, live_server, make_settings, rows, s3_settings, without_xmp
from tests.services import SeaweedS3


@pytest.fixture
def prefix() -> str:
    return f"server-{uuid.uuid4().hex[:12]}"


def local_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_with_an_s3_store_images_go_to_the_bucket_and_every_reader_finds_them(
        tmp_path: Path, sim: Simulator, seaweed: SeaweedS3, prefix: str) -> None:
    settings = s3_settings(tmp_path, seaweed, prefix, sim.url, inline_image="none")
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "a lighthouse in the bucket"})
        assert result.structured_content["status"] == "SUCCESS"
        (row,) = rows(settings.db_path)
        served = sim.image_bytes(row["image_url"])
        # The resource reads the object back from the bucket.
        resource = await client.read_resource(result.structured_content["resource_uri"])
    assert seaweed.keys(prefix + "/") == [f"{prefix}/{row['image_path']}"]
    assert local_files(settings.image_dir) == []  # nothing on the local disk
    from_bucket = base64.b64decode(resource.contents[0].blob)
    assert without_xmp(from_bucket) == served
    assert row["image_sha256"] == hashlib.sha256(from_bucket).hexdigest()

    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        image = await http.get(f"{live.url}/images/{row['id']}")
        health = (await http.get(live.url + "/healthz")).json()
        thumb = await http.get(f"{live.url}/images/{row['id']}/thumb")
    assert image.status_code == 200
    assert image.content == from_bucket  # the kept copy, its XMP packet included
    assert image.headers["content-type"] == row["image_mime"]
    assert (health["status"], health["image_storage"]) == ("ok", "ok")
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"


async def test_healthz_reports_a_bucket_that_refuses_our_keys(
        tmp_path: Path, sim: Simulator, seaweed: SeaweedS3, prefix: str) -> None:
    secret = "not-the-secret-" + uuid.uuid4().hex
    settings = s3_settings(tmp_path, seaweed, prefix, sim.url, aws_secret_access_key=SecretStr(secret))
    async with live_server(settings) as live, httpx2.AsyncClient(timeout=30) as http:
        resp = await http.get(live.url + "/healthz")
    assert resp.status_code == 200  # degraded, not down (calls still answer with Pixazo's URL)
    body = resp.json()
    assert body["status"] == "degraded"
    assert "refused to write" in body["image_storage"]
    assert secret not in resp.text


async def test_a_directory_in_image_store_is_used_instead_of_image_dir(tmp_path: Path, sim: Simulator) -> None:
    store_dir = tmp_path / "elsewhere"
    settings = make_settings(tmp_path, sim.url, image_store=str(store_dir))
    async with in_memory_client(settings) as client:
        result = await client.call_tool("pix_generate", {"prompt": "kept elsewhere"})
    assert result.structured_content["status"] == "SUCCESS"
    assert local_files(store_dir) == [rows(settings.db_path)[0]["image_path"]]
    assert local_files(settings.image_dir) == []


@pytest.mark.parametrize("value", ["gs://bucket/p", "http://s3.example.com/bucket", "s3://", "s3:///p",
                                   "s3://bucket/p?versionId=1"])
def test_an_image_store_url_that_is_not_s3_is_refused_at_start(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="PIXAZO_IMAGE_STORE must be a directory or s3://BUCKET/PREFIX"):
        make_settings(tmp_path, image_store=value)


def test_the_aws_names_and_secret_files_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "AWS_SECRET_ACCESS_KEY").write_text("from-a-secret-file")
    monkeypatch.setenv("PIXAZO_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    monkeypatch.setenv("PIXAZO_IMAGE_STORE", "s3://images/team")
    settings = Settings.load(_env_file=None)
    assert settings.image_store == "s3://images/team"
    assert settings.aws_access_key_id is not None
    assert settings.aws_access_key_id.get_secret_value() == "AKIDEXAMPLE"
    assert settings.aws_secret_access_key is not None
    assert settings.aws_secret_access_key.get_secret_value() == "from-a-secret-file"
    assert settings.aws_region == "eu-central-1"
    assert "from-a-secret-file" not in repr(settings)


def test_the_bucket_secret_is_among_the_strings_the_log_filter_scrubs(tmp_path: Path) -> None:
    import logging

    from app.logs import SecretFilter
    from app.web.app import create_app

    secret = "bucket-secret-" + uuid.uuid4().hex
    app = create_app(make_settings(tmp_path, image_store="s3://images/p", aws_secret_access_key=SecretStr(secret)))
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "signing with %s failed", (secret,), None)
    SecretFilter(app.state.secrets).filter(record)
    assert secret not in record.getMessage()
