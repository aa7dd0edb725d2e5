"""Input images of the editing tools: what a caller may give, and the URL Pixazo is handed to fetch it.

A caller gives a generation id (an integer, or its digits as text), a `pixazo://generations/{id}/image`
URI, or an https URL. An id goes through the service's visibility rule (under `own`, another caller's
generation is as missing as no generation) and must have an image. Pixazo fetches the input itself, so:

- an https URL is passed as given, once its host is known to be on the public internet: an address
  literal must be public (`app.net.is_public_address`), a name must not be an internal one
  (`localhost`, `*.internal`, `*.local`, a name with no dot...) and must not resolve here to any address
  that is not public. A name that does not resolve here is passed all the same: Pixazo resolves it,
  not us. The one exception is for tests: a loopback host named exactly in PIXAZO_ALLOWED_IMAGE_HOSTS
  (the image downloader's explicit loopback rule), where the simulator plays Pixazo;
- a generation whose Pixazo URL is younger than PIXAZO_UPSTREAM_URL_FRESH_S is passed as that URL
  (Pixazo's own host, nothing of ours involved);
- an older one, with PIXAZO_PUBLIC_URL set and a stored copy, as a signed link to that copy (it expires
  in minutes and serves that one image without credentials);
- an older one without PIXAZO_PUBLIC_URL, as its Pixazo URL all the same (how long those live is
  unknown, and nothing better can be offered); a generation with no Pixazo URL and no way to sign
  a link is refused, saying which setting would help.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from app.core.links import LinkSigner
from app.core.service import GenerationService
from app.core.uploads import UploadError, Uploads, is_file_param
from app.errors import NotFoundError
from app.net import is_http_url, is_loopback, is_public_address
from app.settings import Settings
from app.storage.records import IMAGE_URI, MAX_ID, MIN_ID, Generation, parse_utc

URI_PATTERN = re.compile(r"pixazo://generations/(\d{1,19})/image")
FORMS = ("a generation id (an upload's too), a pixazo://generations/{id}/image URI, an https URL, or a "
         "data: URI (PNG, JPEG or WebP, base64)")
# Names that only mean something inside a network (RFC 6761, 6762, 8375, and the clouds' metadata names).
INTERNAL_SUFFIXES = ("localhost", "internal", "local", "localdomain", "home.arpa")
RESOLVE_TIMEOUT_S = 2.0  # a lookup that takes longer proves nothing either way: Pixazo resolves the name
NOT_PUBLIC = "`{name}`: the URL's host {host} {why} a public internet address"


class InputProblem(ValueError):
    """An input image the server will not send; the message is for the caller."""


@dataclass(frozen=True)
class InputImage:
    """One resolved input: the caller's value (recorded as given), the URL Pixazo fetches (never
    recorded), and the generation it came from, if any."""

    given: int | str
    url: str
    parent: Generation | None = None
    signed: bool = False


def parse(name: str, value: Any) -> int | str:
    """The generation id, or the https URL, that a caller's value names; InputProblem otherwise."""
    if isinstance(value, bool):
        raise InputProblem(f"`{name}` must be {FORMS}")
    if isinstance(value, int):
        gen_id = value
    elif isinstance(value, str):
        text = value.strip()
        match = URI_PATTERN.fullmatch(text)
        if text.isascii() and text.isdigit() and len(text) <= 19:
            gen_id = int(text)
        elif match is not None:
            gen_id = int(match.group(1))
        elif is_http_url(text) and urlsplit(text).scheme.lower() == "https":
            if "@" in urlsplit(text).netloc:
                # It would be recorded as given: a row is no place for someone's password.
                raise InputProblem(f"`{name}`: an https URL with a user name or password in it is not accepted")
            return text
        elif text.lower().startswith("http://"):
            raise InputProblem(f"`{name}` must be {FORMS}; plain http is not accepted (Pixazo fetches over https)")
        else:
            raise InputProblem(f"`{name}` must be {FORMS}")
    else:
        raise InputProblem(f"`{name}` must be {FORMS}")
    if not MIN_ID <= gen_id <= MAX_ID:
        raise InputProblem(f"`{name}`: no generation with id {gen_id}")
    return gen_id


def _age_s(gen: Generation, now: datetime) -> float:
    """Seconds since Pixazo made the image (the row's finish; its start if it never finished)."""
    stamp = gen.finished_at or gen.timestamp
    try:
        made = parse_utc(stamp)
    except ValueError:
        return float("inf")
    return (now - made).total_seconds()


def _internal_name(host: str) -> bool:
    return "." not in host or any(host == s or host.endswith("." + s) for s in INTERNAL_SUFFIXES)


async def _addresses(host: str) -> list[str]:
    """What the name resolves to here; none when it does not resolve (in time)."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError):
        return []
    return [str(info[4][0]) for info in found]


class InputResolver:
    """Turns callers' input values into URLs for Pixazo, by the rules in the module docstring."""

    def __init__(self, settings: Settings, service: GenerationService, links: LinkSigner,
                 uploads: Uploads | None = None) -> None:
        self.settings = settings
        self.service = service
        self.links = links
        self.uploads = uploads or Uploads(settings, service)

    async def _brought(self, name: str, value: Any, viewer: str | None) -> int | None:
        """An image the caller brings in the argument itself (a data: URI, ChatGPT's file object), kept
        as an upload row whose id stands for it from here on; None for any other value."""
        data_uri = isinstance(value, str) and value.strip()[:5].lower() == "data:"
        file_param = is_file_param(value)
        if (data_uri or file_param) and not self.links.enabled:  # refused before anything is kept: unusable
            raise InputProblem(
                f"`{name}`: Pixazo fetches input images by URL, and this server has no address it can reach "
                "(PIXAZO_PUBLIC_URL is not set; over stdio there is none), so an image brought in the call "
                "cannot be sent. Give an https URL of the image, or use a server with PIXAZO_PUBLIC_URL")
        try:
            if data_uri:
                return (await self.uploads.from_data_uri(value.strip(), viewer)).id
            if file_param:
                return (await self.uploads.from_file_link(value["download_url"], viewer)).id
        except UploadError as exc:
            raise InputProblem(f"`{name}`: {exc.message[0].lower()}{exc.message[1:].rstrip('.')}") from None
        return None

    async def _check_host(self, name: str, url: str) -> None:
        """InputProblem unless the URL's host is on the public internet (module docstring)."""
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        named = [p.lower().strip().strip("[]") for p in self.settings.allowed_image_hosts]
        if is_loopback(host) and host in named:
            return
        try:
            public: bool | None = is_public_address(host)
        except ValueError:
            public = None  # a name: judged by its form, then by what it resolves to here
        if public is None and _internal_name(host):
            why: str | None = "is an internal name, not"
        elif public is None:
            inward = [address for address in await _addresses(host) if not is_public_address(address)]
            why = f"resolves to {inward[0]}, not" if inward else None
        else:
            why = None if public else "is not"
        if why is not None:
            raise InputProblem(NOT_PUBLIC.format(name=name, host=host, why=why))

    async def resolve(self, name: str, value: Any, viewer: str | None) -> InputImage:
        brought = await self._brought(name, value, viewer)
        if brought is not None:
            value = brought  # recorded as the upload's id, never as the bytes or the file's link
        ref = parse(name, value)
        if isinstance(ref, str):
            await self._check_host(name, ref)
            return InputImage(given=value if isinstance(value, str) else ref, url=ref)
        try:
            gen = await self.service.get(ref, viewer)
        except NotFoundError:
            raise InputProblem(f"`{name}`: no generation with id {ref}") from None
        has_copy = bool(gen.image_path)
        upstream = gen.image_url if is_http_url(gen.image_url) else None
        if not has_copy and upstream is None:
            raise InputProblem(f"`{name}`: generation {ref} has no image (status {gen.status})")
        fresh = upstream is not None and _age_s(gen, datetime.now(UTC)) < self.settings.upstream_url_fresh_s
        if upstream is not None and (fresh or not (has_copy and self.links.enabled)):
            return InputImage(given=value, url=upstream, parent=gen)
        if has_copy and self.links.enabled:
            return InputImage(given=value, url=self.links.url(gen.id), parent=gen, signed=True)
        # A stored copy but no Pixazo URL and no public address: Pixazo cannot reach the image.
        raise InputProblem(
            f"`{name}`: generation {ref} has no image Pixazo can fetch; the server needs PIXAZO_PUBLIC_URL "
            f"to hand it a link to {IMAGE_URI.format(id=ref)}")
