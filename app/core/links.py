"""Signed links to one stored image: what Pixazo fetches when an editing tool's input is our copy.

A link is `{PIXAZO_PUBLIC_URL}/signed/{id}?expires={unix seconds}&sig={hex}`, the signature an
HMAC-SHA256 over the id and the expiry. It needs no credentials, serves that one image only, and
stops working after PIXAZO_SIGNED_LINK_TTL_S. The key is 32 random bytes kept in the shared database
(`server_keys`), made by the first process that needs it: every replica checks what any other signed,
and its strength never depends on text an operator typed (it once derived from PIXAZO_SESSION_SECRET,
and a placeholder secret let anyone forge links). Links are served only with PIXAZO_PUBLIC_URL set.
A link is a bearer credential for one image for a few minutes: it goes to Pixazo in the request body
and nowhere else (no row, result or log line keeps it).
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNED_PATH = "/signed/{id}"
KEY_NAME = "signed_links"  # its row in server_keys
SIG_CHARS = 64  # hex of SHA-256


class LinkSigner:
    """Makes and checks signed links; `base_url` None means there is no public address to sign for."""

    def __init__(self, key: bytes, ttl_s: int, base_url: str | None) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.base_url = base_url.rstrip("/") if base_url else None

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    def _sig(self, gen_id: int, expires: int) -> str:
        return hmac.new(self._key, f"{gen_id}.{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, gen_id: int, now: float | None = None) -> str:
        if self.base_url is None:
            raise RuntimeError("no PIXAZO_PUBLIC_URL to sign links for")
        expires = int(now if now is not None else time.time()) + self.ttl_s
        return f"{self.base_url}{SIGNED_PATH.format(id=gen_id)}?expires={expires}&sig={self._sig(gen_id, expires)}"

    def seconds_left(self, gen_id: int, expires: str | None, sig: str | None, now: float | None = None) -> int | None:
        """Seconds the link still works, or None when it is expired, altered, or for another image
        (one answer for all three: a prober learns nothing about which)."""
        if expires is None or sig is None or not expires.isdigit() or len(expires) > 12 or len(sig) != SIG_CHARS:
            return None
        # Compared before the expiry is read, in constant time, so timing says nothing about the key.
        if not hmac.compare_digest(self._sig(gen_id, int(expires)).encode(), sig.encode()):
            return None
        left = int(expires) - int(now if now is not None else time.time())
        # A link never outlives the TTL in force (a lowered TTL shortens links already handed out).
        return min(left, self.ttl_s) if left > 0 else None
