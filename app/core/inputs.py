"""Input images of the editing tools: what a caller may give, and the URL Pixazo is handed to fetch it.

A caller gives a generation id (an integer, or its digits as text), a `pixazo://generations/{id}/image`
URI, or an https URL. An id goes through the service's visibility rule (under `own`, another caller's
generation is as missing as no generation) and must have an image. Pixazo fetches the input itself, so:

- an https URL is passed as given;
- a generation whose Pixazo URL is younger than PIXAZO_UPSTREAM_URL_FRESH_S is passed as that URL
  (Pixazo's own host, nothing of ours involved);
- an older one, with PIXAZO_PUBLIC_URL set and a stored copy, as a signed link to that copy (it expires
  in minutes and serves that one image without credentials);
- an older one without PIXAZO_PUBLIC_URL, as its Pixazo URL all the same (how long those live is
  unknown, and nothing better can be offered); a generation with no Pixazo URL and no way to sign
  a link is refused, saying which setting would help.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from app.core.links import LinkSigner
from app.core.service import GenerationService
from app.errors import NotFoundError
from app.net import is_http_url
from app.settings import Settings
from app.storage.records import IMAGE_URI, MAX_ID, MIN_ID, Generation

URI_PATTERN = re.compile(r"pixazo://generations/(\d{1,19})/image")
FORMS = "a generation id, a pixazo://generations/{id}/image URI, or an https URL"


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
        made = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if made.tzinfo is None:
        made = made.replace(tzinfo=UTC)
    return (now - made).total_seconds()


class InputResolver:
    """Turns callers' input values into URLs for Pixazo, by the rules in the module docstring."""

    def __init__(self, settings: Settings, service: GenerationService, links: LinkSigner) -> None:
        self.settings = settings
        self.service = service
        self.links = links

    async def resolve(self, name: str, value: Any, viewer: str | None) -> InputImage:
        ref = parse(name, value)
        if isinstance(ref, str):
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
