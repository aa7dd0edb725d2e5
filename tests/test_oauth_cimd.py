"""Client ID Metadata Documents: the client's id is an https URL; the server fetches the document under
the download rules. Served here over real TLS on loopback, with a throwaway CA the server trusts."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from app.pixazo.simulator import Simulator
from tests.conftest import LiveServer, free_port, live_server, make_settings
from tests.oauth_helpers import REDIRECT, Grant, MemoryStorage, Person, client_metadata, oauth_rows, sdk_auth

ALICE = "alice-team-token-0123456789"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca_and_leaf(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (its PEM for the server to trust) and a server context for localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("pixazo test CA")).issuer_name(_name("pixazo test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem = directory / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem, key_pem = directory / "leaf.pem", directory / "leaf.key"
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_pem, key_pem)
    return ca_pem, context


@dataclass
class DocumentServer:
    """An https server on loopback serving client metadata documents, counting what it is asked for."""

    port: int
    documents: dict[str, Any] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
        body = self.documents.get(request.path)
        if body == "slow":  # never answers in time; the server gives up at its 5 s cap
            await asyncio.sleep(8)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body if isinstance(body, bytes) else json.dumps(body).encode(),
                            content_type="application/json")


@pytest.fixture
async def docs(tmp_path: Path) -> AsyncIterator[tuple[DocumentServer, Path]]:
    ca_pem, context = make_ca_and_leaf(tmp_path)
    server = DocumentServer(free_port())
    app = web.Application()
    app.router.add_get("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port, ssl_context=context).start()
    try:
        yield server, ca_pem
    finally:
        await runner.cleanup()


def document(url: str, **overrides: Any) -> dict[str, Any]:
    return {"client_id": url, "client_name": "Metadata app", "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], **overrides}


@pytest.fixture
async def server(tmp_path: Path, sim: Simulator, docs: tuple[DocumentServer, Path]) -> AsyncIterator[LiveServer]:
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             public_url=f"http://127.0.0.1:{port}", oauth_ca_file=docs[1],
                             oauth_metadata_loopback_hosts=["localhost"])
    async with live_server(settings, port=port) as live:
        yield live


async def test_the_cimd_flow_with_the_sdk_client(server: LiveServer, docs: tuple[DocumentServer, Path]) -> None:
    doc_server, _ = docs
    url = doc_server.url("/oauth/client.json")
    doc_server.documents["/oauth/client.json"] = document(url)
    person = Person(ALICE)
    storage = MemoryStorage()
    auth = sdk_auth(server.mcp_url, person, storage, client_metadata("Metadata app"), client_metadata_url=url)
    async with (httpx2.AsyncClient(auth=auth, timeout=30) as http,
                Client(streamable_http_client(server.mcp_url, http_client=http)) as client):
        status = (await client.call_tool("pix_status", {})).structured_content
    assert status is not None
    assert status["caller"] == "alice"
    assert storage.client is not None
    assert storage.client.client_id == url  # no registration: the URL is the id
    assert "Metadata app" in person.pages[0].text
    (row,) = oauth_rows(server.settings.db_path, "oauth_clients")
    assert row["client_id"] == url
    assert row["kind"] == "cimd"
    # fetched once and cached across /authorize and /token
    assert doc_server.hits["/oauth/client.json"] == 1


async def test_unusable_documents_are_refused(server: LiveServer, docs: tuple[DocumentServer, Path],
                                              caplog: pytest.LogCaptureFixture) -> None:
    doc_server, _ = docs
    cases: dict[str, tuple[Any, str]] = {
        "/wrong-id.json": (document(doc_server.url("/someone-else.json")), "its client_id is not its own URL"),
        "/plain-http-redirect.json": (document(doc_server.url("/plain-http-redirect.json"),
                                               redirect_uris=["http://evil.example/cb"]), "neither https nor loopback"),
        "/confidential.json": (document(doc_server.url("/confidential.json"),
                                        token_endpoint_auth_method="client_secret_post"), "only 'none'"),
        "/huge.json": (json.dumps(document(doc_server.url("/huge.json"), client_name="x" * 20000)).encode(),
                       "larger than 16384 bytes"),
        "/not-json.json": (b"<html>hello</html>", "not JSON"),
        "/missing.json": (None, "answered HTTP 404"),
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        for path, (body, reason) in cases.items():
            if body is not None:
                doc_server.documents[path] = body
            caplog.clear()
            grant = Grant(server.url, client_id=doc_server.url(path))
            answer = await http.get(grant.authorize_url())
            assert answer.status_code == 400, path
            assert "not found" in answer.json()["error_description"], path
            assert reason in caplog.text, path
    assert oauth_rows(server.settings.db_path, "oauth_clients") == []


async def test_loopback_documents_need_the_explicit_test_setting(
        tmp_path: Path, sim: Simulator, docs: tuple[DocumentServer, Path]) -> None:
    doc_server, ca_pem = docs
    url = doc_server.url("/client.json")
    doc_server.documents["/client.json"] = document(url)
    port = free_port()
    # Same CA trusted, but localhost is not named: public addresses only, so the fetch never happens.
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             public_url=f"http://127.0.0.1:{port}", oauth_ca_file=ca_pem)
    async with live_server(settings, port=port) as live, httpx2.AsyncClient(timeout=30) as http:
        answer = await http.get(Grant(live.url, client_id=url).authorize_url())
        by_address = await http.get(Grant(live.url, client_id=f"https://127.0.0.1:{doc_server.port}/client.json"
                                          ).authorize_url())
    assert answer.status_code == 400
    assert by_address.status_code == 400
    assert doc_server.hits == {}


async def test_an_untrusted_certificate_is_refused(tmp_path: Path, sim: Simulator,
                                                   docs: tuple[DocumentServer, Path]) -> None:
    doc_server, _ = docs
    url = doc_server.url("/client.json")
    doc_server.documents["/client.json"] = document(url)
    port = free_port()
    settings = make_settings(tmp_path, sim.url, auth_tokens=SecretStr(f"alice:{ALICE}"),
                             public_url=f"http://127.0.0.1:{port}", oauth_metadata_loopback_hosts=["localhost"])
    async with live_server(settings, port=port) as live, httpx2.AsyncClient(timeout=30) as http:
        answer = await http.get(Grant(live.url, client_id=url).authorize_url())
    assert answer.status_code == 400
    assert doc_server.hits == {}  # the TLS handshake failed before any request
