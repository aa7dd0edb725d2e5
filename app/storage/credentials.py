"""C2PA Content Credentials: a signed manifest in each kept image, when the team gives a certificate.

Optional twice over: the `c2pa-python` package (the extra `pixazo-mcp[c2pa]`; it is large) and the
settings PIXAZO_C2PA_CERT_FILE (the certificate chain, PEM, end-entity first) and PIXAZO_C2PA_KEY_FILE
(its private key, PEM). Without both settings nothing is signed and nothing changes; with them and
without the package, or with files that cannot be read or do not sign, the server refuses to start.

A manifest says: claim generator pixazo-mcp; a new image `c2pa.created` with the digital source type
trainedAlgorithmicMedia; an edit `c2pa.opened` on its parent image (an ingredient, with the parent's own
manifest when it has one, so an edit's chain is verifiable outside our database) and then `c2pa.edited`.
Signing is blocking work for the image pool. The claim's own thumbnail is off: it would decode the image
again, and the gallery has its own.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, BinaryIO

from app import __version__
from app.settings import Settings, SettingsError
from app.storage.provenance import TOOL, Provenance

logger = logging.getLogger(__name__)

# The algorithms c2pa-python signs with, by the key's type (ECDSA by curve; RSA as PSS; Ed25519).
_CURVE_ALG = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
# What the library is told: no claim thumbnail (a second decode), nothing fetched from the network.
_LIBRARY_SETTINGS: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}},
                                     "verify": {"ocsp_fetch": False, "remote_manifest_fetch": False}}


class SigningError(Exception):
    """A manifest could not be made; the message is short and holds no secret (for the row and the log)."""


def available() -> bool:
    """Whether the c2pa-python package is installed (and its native library loads)."""
    try:
        import c2pa  # noqa: F401 - imported to be sure it loads
    except (ImportError, OSError):
        return False
    return True


def _algorithm(key_pem: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(key_pem, password=None)
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVE_ALG:
        return _CURVE_ALG[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ValueError("the key is not ECDSA P-256/384/521, RSA or Ed25519")


class ContentCredentials:
    """Signs images with the team's certificate chain and key (read once, at start-up)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self._certs = cert_pem
        self._key = key_pem
        self.algorithm = _algorithm(key_pem)

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentCredentials | None:
        """None when signing is off; SettingsError (one line, no secret) when it is asked for and cannot be."""
        cert, key = settings.c2pa_cert_file, settings.c2pa_key_file
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            missing = "PIXAZO_C2PA_CERT_FILE" if cert is None else "PIXAZO_C2PA_KEY_FILE"
            raise SettingsError(f"C2PA signing needs both PIXAZO_C2PA_CERT_FILE and PIXAZO_C2PA_KEY_FILE; "
                                f"{missing} is not set")
        if not available():
            raise SettingsError("PIXAZO_C2PA_CERT_FILE is set but the c2pa-python package is not installed: "
                                "install pixazo-mcp[c2pa], or unset PIXAZO_C2PA_CERT_FILE and PIXAZO_C2PA_KEY_FILE")
        texts = []
        for variable, path in (("PIXAZO_C2PA_CERT_FILE", cert), ("PIXAZO_C2PA_KEY_FILE", key)):
            try:
                texts.append(Path(path).read_bytes())
            except OSError as exc:
                raise SettingsError(f"{variable}: cannot read {path} ({exc.strerror})") from None
        try:
            found = cls(texts[0], texts[1])
        except (ValueError, TypeError):
            raise SettingsError("PIXAZO_C2PA_KEY_FILE is not an unencrypted PEM private key of a kind C2PA "
                                "signs with (ECDSA P-256/384/521, RSA, Ed25519)") from None
        try:
            found.sign_bytes(_probe_png(), "image/png", Provenance(0, "generate", "probe"))
        except SigningError as exc:
            raise SettingsError(f"PIXAZO_C2PA_CERT_FILE and PIXAZO_C2PA_KEY_FILE do not sign: {exc}") from None
        return found

    def manifest(self, p: Provenance, mime: str, with_parent: bool) -> dict[str, Any]:
        agent = {"name": TOOL, "version": __version__}
        actions: list[dict[str, Any]] = []
        if with_parent:
            actions.append({"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}})
            actions.append({"action": "c2pa.edited", "softwareAgent": agent, "digitalSourceType": p.source_type,
                            "description": f"{p.operation.replace('_', ' ')} by Pixazo {p.model}"})
        else:
            # Also an edit of an image we hold no copy of (an https URL): its parent cannot be an ingredient,
            # and C2PA wants an edit to open one, so the new image is declared as created from it.
            actions.append({"action": "c2pa.created", "softwareAgent": agent,
                            "digitalSourceType": p.source_type,
                            "description": f"{p.operation.replace('_', ' ')} by Pixazo {p.model}"})
        return {
            "claim_generator_info": [agent],
            "title": f"generation {p.generation_id}",
            "format": mime,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        }

    def _sign(self, source: BinaryIO, dest: BinaryIO, mime: str, p: Provenance, parent: BinaryIO | None) -> None:
        import c2pa

        with_parent = p.edit and p.parent is not None and parent is not None
        try:
            context = c2pa.Context.from_dict(_LIBRARY_SETTINGS)
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(self.algorithm, self._certs, self._key, None))
            with signer, c2pa.Builder(self.manifest(p, mime, with_parent), context) as builder:
                if with_parent and p.parent is not None and parent is not None:
                    builder.add_ingredient({"title": p.parent.title, "relationship": "parentOf",
                                            "label": "parent"}, p.parent.mime, parent)
                builder.sign(signer, mime, source, dest)
        except c2pa.C2paError as exc:
            raise SigningError(_reason(exc)) from None

    def sign_file(self, source: Path, dest: Path, mime: str, p: Provenance, parent: Path | None = None) -> None:
        """Write `source` with its manifest to `dest`; SigningError says why not. Blocking: the image pool.

        `parent`: a local copy of the edit's input image (`p.parent`), made its ingredient."""
        try:
            with contextlib.ExitStack() as files:
                src = files.enter_context(open(source, "rb"))
                out = files.enter_context(open(dest, "wb"))
                parent_file = files.enter_context(open(parent, "rb")) if parent is not None else None
                self._sign(src, out, mime, p, parent_file)
        except OSError as exc:
            raise SigningError(f"a file could not be read or written ({exc.strerror})") from None

    def sign_bytes(self, data: bytes, mime: str, p: Provenance, parent: bytes | None = None) -> bytes:
        """`data` with its manifest (the benchmark's and the start-up check's form)."""
        out = io.BytesIO()
        self._sign(io.BytesIO(data), out, mime, p, io.BytesIO(parent) if parent is not None else None)
        return out.getvalue()


def _reason(exc: Exception) -> str:
    """The library's message, first line, bounded: it names what failed, never the key."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _probe_png() -> bytes:
    """A 1x1 PNG for the start-up check (made once, at start-up)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, format="PNG")
    return out.getvalue()
