"""Provenance in every kept image (issue 26): an XMP packet read back from stored PNG and JPEG images, with
the IPTC digital source type (a model's image; an edit of the caller's own image is a composite), and,
with a test certificate, a C2PA manifest that c2pa-python's Reader validates, an edit naming its parent
as an ingredient. Signing off changes nothing; a signing failure keeps the image unsigned and says so."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import c2pa
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image

from app.ops.provenance_cost import provenance_costs
from app.ops.testcert import make_test_certificate
from app.pixazo.simulator import Simulator
from app.settings import Settings, SettingsError
from app.storage.blobs import LocalBlobStore
from app.storage.credentials import ContentCredentials
from app.storage.images import ImageStore
from app.storage.provenance import COMPOSITE, TRAINED, Marked, Provenance, insert_xmp, xmp_packet
from tests.conftest import TEST_KEY, free_port, http_client, in_memory_client, live_server, make_settings, rows

NS = {"Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/", "xmp": "http://ns.adobe.com/xap/1.0/",
      "pixazo": "https://github.com/pixazo-mcp/pixazo-mcp/ns/1.0/"}
TOKEN = "alice-token-0123456789abcdef"


def read_xmp(data: bytes) -> dict[str, str]:
    """The packet as Pillow finds it in the image (PNG iTXt, JPEG APP1), its fields by local name."""
    with Image.open(io.BytesIO(data)) as img:
        raw = img.info.get("XML:com.adobe.xmp") if img.format == "PNG" else img.info.get("xmp")
    assert raw, "no XMP packet in the image"
    text = raw.decode() if isinstance(raw, bytes) else raw
    root = ET.fromstring(text.split("?>", 1)[1].rsplit("<?xpacket", 1)[0])  # noqa: S314 - our own packet
    found = {}
    for prefix, uri in NS.items():
        for element in root.iter():
            if element.tag.startswith("{" + uri + "}"):
                found[f"{prefix}:{element.tag.split('}')[1]}"] = element.text or ""
    return found


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as img:
        return img.tobytes()


def stored(settings: Settings, row: dict[str, Any]) -> bytes:
    return (settings.image_dir / row["image_path"]).read_bytes()


def manifest_of(data: bytes, mime: str, ca_pem: bytes) -> tuple[str, dict[str, Any]]:
    """(validation state, active manifest) as c2pa-python's Reader sees them, trusting the test CA."""
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": ca_pem.decode()},
                                      "verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}})
    with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
        return reader.get_validation_state(), reader.get_active_manifest()


def actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    (found,) = [a["data"]["actions"] for a in manifest["assertions"] if a["label"].startswith("c2pa.actions")]
    return list(found)


def photo(fmt: str, side: int = 1024) -> bytes:
    """A real-size image with detail in it (noise: it compresses like a photograph)."""
    img = Image.effect_noise((side, side), 64).convert("RGB")
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("chunk", [5, 64 * 1024])
async def test_the_packet_goes_in_as_the_bytes_stream_and_no_pixel_changes(fmt: str, chunk: int) -> None:
    original = photo(fmt)
    made = Provenance(41, "upscale", "crystal-upscaler & <co>", COMPOSITE)
    marked = Marked(pieces(original, chunk), fmt, xmp_packet(made))
    out = b"".join([c async for c in marked])
    assert out == insert_xmp(original, fmt, xmp_packet(made))
    assert (marked.size, marked.hash.hexdigest()) == (len(out), hashlib.sha256(out).hexdigest())
    assert read_xmp(out) == {
        "Iptc4xmpExt:DigitalSourceType": COMPOSITE, "Iptc4xmpExt:AISystemUsed": "Pixazo crystal-upscaler & <co>",
        "xmp:CreatorTool": "pixazo-mcp 0.1.0", "pixazo:GenerationId": "41", "pixazo:Operation": "upscale"}
    assert pixels(out) == pixels(original)
    if fmt == "JPEG":  # a JFIF APP0 stays first, as JFIF wants
        assert out[2:4] == b"\xff\xe0"
        assert out[20:22] == b"\xff\xe1"


async def test_a_generation_and_its_edit_are_kept_with_xmp_and_nothing_else_changes(
        tmp_path: Path, sim: Simulator) -> None:
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.02, poll_cap_s=0.05)
    async with in_memory_client(settings) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a lighthouse at dusk"})
        edit = await client.call_tool("pix_remove_background", {"image": made.structured_content["id"]})
    assert not edit.is_error, edit.content
    first, second = rows(settings.db_path)
    for row, operation, model in ((first, "generate", "sdxl"), (second, "remove_background", "bria-rmbg-2.0")):
        kept, served = stored(settings, row), sim.image_bytes(row["image_url"])
        assert read_xmp(kept) == {
            "Iptc4xmpExt:DigitalSourceType": TRAINED, "Iptc4xmpExt:AISystemUsed": f"Pixazo {model}",
            "xmp:CreatorTool": "pixazo-mcp 0.1.0", "pixazo:GenerationId": str(row["id"]),
            "pixazo:Operation": operation}
        assert pixels(kept) == pixels(served)
        assert kept == insert_xmp(served, "PNG", xmp_packet(Provenance(row["id"], operation, model)))
        assert (row["image_bytes"], row["image_sha256"]) == (len(kept), hashlib.sha256(kept).hexdigest())
        assert row["provenance"] == "xmp"
        # Signing off (no certificate): no C2PA manifest at all.
        with pytest.raises(c2pa.C2paError):
            c2pa.Reader("image/png", io.BytesIO(kept))


async def test_an_upload_is_kept_as_it_came_and_its_edit_is_a_composite(tmp_path: Path, sim: Simulator) -> None:
    """End to end over HTTP: the simulator fetches the upload through its signed link, as Pixazo would."""
    port = free_port()
    own = photo("JPEG", 512)
    settings = make_settings(tmp_path, sim.url, public_url=f"http://127.0.0.1:{port}", auth_tokens=f"alice:{TOKEN}",
                             poll_base_s=0.02, poll_cap_s=0.05)
    async with live_server(settings, port) as live, http_client(live, {"Authorization": f"Bearer {TOKEN}"}) as client:
        uri = "data:image/jpeg;base64," + base64.b64encode(own).decode()
        edit = await client.call_tool("pix_upscale", {"image": uri})
        again = await client.call_tool("pix_remove_background", {"image": edit.structured_content["id"]})
    assert not edit.is_error, edit.content
    assert not again.is_error, again.content
    upload, upscaled, cut_out = rows(settings.db_path)
    assert upload["operation"] == "upload"
    assert stored(settings, upload) == own
    assert upload["provenance"] is None
    for row in (upscaled, cut_out):  # the edit of the upload, and the edit of that edit
        assert read_xmp(stored(settings, row))["Iptc4xmpExt:DigitalSourceType"] == COMPOSITE
        assert row["provenance"] == "xmp"


@pytest.fixture
def signing(tmp_path: Path, sim: Simulator) -> tuple[Settings, bytes]:
    chain, key, ca_pem = make_test_certificate(tmp_path)
    return make_settings(tmp_path, sim.url, poll_base_s=0.02, poll_cap_s=0.05, c2pa_cert_file=chain,
                         c2pa_key_file=key), ca_pem


async def test_with_a_certificate_each_image_has_a_valid_manifest_and_an_edit_names_its_parent(
        signing: tuple[Settings, bytes], sim: Simulator) -> None:
    settings, ca_pem = signing
    async with in_memory_client(settings) as client:
        made = await client.call_tool("pix_generate", {"prompt": "a lighthouse at dusk"})
        edit = await client.call_tool("pix_upscale", {"image": made.structured_content["id"], "scale": 2})
    assert not edit.is_error, edit.content
    first, second = rows(settings.db_path)
    parent_bytes, edit_bytes = stored(settings, first), stored(settings, second)
    state, manifest = manifest_of(parent_bytes, "image/png", ca_pem)
    assert state == "Trusted"
    assert manifest["claim_generator_info"][0]["name"] == "pixazo-mcp"
    (created,) = actions(manifest)
    assert (created["action"], created["digitalSourceType"]) == ("c2pa.created", TRAINED)
    state, edited = manifest_of(edit_bytes, "image/png", ca_pem)
    assert state == "Trusted"
    assert [(a["action"], a.get("digitalSourceType")) for a in actions(edited)] == [
        ("c2pa.opened", None), ("c2pa.edited", TRAINED)]
    (ingredient,) = edited["ingredients"]
    assert ingredient["relationship"] == "parentOf"
    assert ingredient["active_manifest"] == manifest["label"]  # the parent's own manifest: the chain holds
    # The XMP is still there, and the row says what the image carries; its hash is the stored file's.
    assert read_xmp(edit_bytes)["pixazo:GenerationId"] == str(second["id"])
    assert (first["provenance"], second["provenance"]) == ("xmp+c2pa", "xmp+c2pa")
    assert second["image_sha256"] == hashlib.sha256(edit_bytes).hexdigest()
    assert pixels(edit_bytes) == pixels(sim.image_bytes(second["image_url"]))


async def test_a_signing_failure_keeps_the_image_unsigned_and_says_so(tmp_path: Path, sim: Simulator) -> None:
    # A key that does not belong to the certificate: the start-up check refuses it, so build the store with it.
    chain, key, _ = make_test_certificate(tmp_path, leaf_key=ec.generate_private_key(ec.SECP256R1()))
    settings = make_settings(tmp_path, sim.url, c2pa_cert_file=chain, c2pa_key_file=key)
    with pytest.raises(SettingsError, match="do not sign"):
        ContentCredentials.from_settings(settings)
    credentials = ContentCredentials(chain.read_bytes(), key.read_bytes())
    async with aiohttp.ClientSession() as http:
        async with http.post(sim.url + "/getImage/v1/getSDXLImage", headers={"Ocp-Apim-Subscription-Key": TEST_KEY},
                             json={"prompt": "unsigned", "width": 1024, "height": 1024}) as resp:
            url = (await resp.json())["imageUrl"]
        with ThreadPoolExecutor(2) as pool:
            images = ImageStore(LocalBlobStore(tmp_path / "images"), http, ["127.0.0.1"], max_bytes=1 << 25,
                                max_pixels=1 << 22, max_downloads=2, pool=pool, credentials=credentials)
            kept = await images.download(url, 7, with_thumbnail=True, provenance=Provenance(7, "generate", "sdxl"))
    data = (tmp_path / "images" / kept.name).read_bytes()
    assert kept.provenance is not None
    assert kept.provenance.startswith("xmp; c2pa signing failed: ")
    assert "PRIVATE KEY" not in kept.provenance
    assert read_xmp(data)["pixazo:GenerationId"] == "7"
    assert kept.thumbnail is not None
    assert (kept.size, kept.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert [p.name for p in (tmp_path / "images").iterdir()] == [kept.name]


def test_half_a_certificate_or_no_package_stops_the_start_in_one_line(tmp_path: Path) -> None:
    chain, key, _ = make_test_certificate(tmp_path)
    with pytest.raises(SettingsError, match="needs both PIXAZO_C2PA_CERT_FILE and PIXAZO_C2PA_KEY_FILE"):
        ContentCredentials.from_settings(make_settings(tmp_path, c2pa_cert_file=chain))
    with pytest.raises(SettingsError, match=r"PIXAZO_C2PA_KEY_FILE: cannot read .*nothing.pem"):
        ContentCredentials.from_settings(make_settings(tmp_path, c2pa_cert_file=chain,
                                                       c2pa_key_file=tmp_path / "nothing.pem"))
    # Without the package (as if not installed): the command ends with one line and exit code 2.
    code = ("import sys; sys.modules['c2pa'] = None; from app.cli import main; "
            "sys.exit(main(['serve', '--port', '0']))")
    env = {"PIXAZO_C2PA_CERT_FILE": str(chain), "PIXAZO_C2PA_KEY_FILE": str(key), "PATH": "/usr/bin:/bin",
           "PIXAZO_DB_PATH": str(tmp_path / "p.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
           "PIXAZO_SECRETS_DIR": str(tmp_path / "no-secrets")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parent.parent, check=False)
    assert done.returncode == 2
    assert done.stderr == ("pixazo-mcp: PIXAZO_C2PA_CERT_FILE is set but the c2pa-python package is not installed: "
                           "install pixazo-mcp[c2pa], or unset PIXAZO_C2PA_CERT_FILE and PIXAZO_C2PA_KEY_FILE\n")


def test_the_certificate_and_key_may_be_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    chain, key, _ = make_test_certificate(secrets)
    chain.rename(secrets / "PIXAZO_C2PA_CERT_FILE")
    key.rename(secrets / "PIXAZO_C2PA_KEY_FILE")
    monkeypatch.setenv("PIXAZO_SECRETS_DIR", str(secrets))
    loaded = Settings.load(_env_file=None)
    assert (loaded.c2pa_cert_file, loaded.c2pa_key_file) == (secrets / "PIXAZO_C2PA_CERT_FILE",
                                                             secrets / "PIXAZO_C2PA_KEY_FILE")
    assert ContentCredentials.from_settings(loaded) is not None


def test_the_benchmark_gets_the_cost_of_provenance_per_image(signing: tuple[Settings, bytes]) -> None:
    settings, _ = signing
    image = photo("PNG")
    off = provenance_costs(image, settings.model_copy(update={"c2pa_cert_file": None, "c2pa_key_file": None}),
                           repeat=2)
    on = provenance_costs(image, settings, repeat=2)
    assert off["image_bytes"] == len(image)
    assert 0 < off["xmp_bytes"] < 1024
    assert off["xmp_ms"] >= 0
    assert off["c2pa_ms"] is None
    assert off["c2pa_bytes"] is None
    assert on["c2pa_ms"] > 0
    assert on["c2pa_bytes"] > 1000
    json.dumps(on)  # plain figures, ready for the benchmark's JSON
