"""Editing inputs that point inward (security issue 19): an https URL whose host is not on the public
internet is refused before anything is recorded or sent to Pixazo, through the real tool path."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.pixazo.gateway import EDITORS
from app.pixazo.simulator import Simulator
from app.settings import Settings
from tests.conftest import make_settings, rows
from tests.test_editing import call, settings  # the editing tests' settings (a fixture) and one-call client

NOTHING_DONE = "Nothing was recorded or sent to Pixazo."




@pytest.mark.parametrize(("image", "why"), [
    ("https://169.254.169.254/latest/meta-data/x.png", "host 169.254.169.254 is not a public internet address"),
    ("https://[::ffff:10.0.0.1]/a.png", "host ::ffff:10.0.0.1 is not a public internet address"),
    ("https://[::ffff:0:7f00:1]/a.png", "host ::ffff:0:7f00:1 is not a public internet address"),
    ("https://[::127.0.0.1]/a.png", "host ::127.0.0.1 is not"),
    ("https://[64:ff9b::a9fe:a9fe]/a.png", "host 64:ff9b::a9fe:a9fe is not"),
    ("https://[2002:a9fe:a9fe::1]/a.png", "host 2002:a9fe:a9fe::1 is not"),
    ("https://[fe80::1%25eth0]/a.png", "is not a public internet address"),
    ("https://10.0.0.1:8443/a.png", "host 10.0.0.1 is not"),
    ("https://localhost/a.png", "host localhost is an internal name, not a public internet address"),
    ("https://LOCALHOST./a.png", "host localhost is an internal name"),
    ("https://api.localhost/a.png", "host api.localhost is an internal name"),
    ("https://metadata.google.internal/computeMetadata/v1/a.png", "host metadata.google.internal is an internal"),
    ("https://printer.local/a.png", "host printer.local is an internal name"),
    ("https://intranet/a.png", "host intranet is an internal name"),
    # Names that resolve here (with no DNS at all: numeric shorthands) to loopback.
    ("https://127.1/a.png", "host 127.1 resolves to 127.0.0.1, not a public internet address"),
    ("https://0x7f.0.0.1/a.png", "resolves to 127.0.0.1"),
])
async def test_an_inward_https_input_is_refused_with_nothing_recorded_or_sent(
        settings: Settings, sim: Simulator, image: str, why: str) -> None:
    result = await call(settings, "pix_upscale", {"image": image})
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("`image`: the URL's host")  # one plain sentence (issue 23)
    assert why in text
    assert text.endswith(NOTHING_DONE)
    assert list(sim.stats.calls) == []
    assert list(sim.stats.fetches) == []
    assert rows(settings.db_path) == []


async def test_the_mask_is_checked_too_and_named(settings: Settings, sim: Simulator) -> None:
    result = await call(settings, "pix_inpaint", {"image": "https://images.example.com/a.png",
                                                  "mask": "https://[::ffff:169.254.169.254]/m.png", "prompt": "p"})
    assert result.is_error
    assert result.content[0].text.endswith(
        "`mask`: the URL's host ::ffff:169.254.169.254 is not a public internet address. "
        + NOTHING_DONE)
    assert list(sim.stats.calls) == []
    assert rows(settings.db_path) == []


async def test_a_name_that_does_not_resolve_here_is_left_to_pixazo(settings: Settings, sim: Simulator) -> None:
    # No DNS for outside names in tests: the name is passed as given, and Pixazo (the simulator) tries it.
    url = "https://images.example.com/cat.png"
    result = await call(settings, "pix_remove_background", {"image": url})
    path = EDITORS["remove_background"].path
    assert [c["body"] for c in sim.stats.calls if c["path"] == path] == [{"image_url": url}]
    assert result.is_error  # the simulator could not fetch it either
    assert [r["status"] for r in rows(settings.db_path)] == ["JOB_FAILED"]


async def test_loopback_is_allowed_only_when_named_exactly_in_the_image_hosts(tmp_path: Path, sim: Simulator) -> None:
    # Tests name 127.0.0.1 in PIXAZO_ALLOWED_IMAGE_HOSTS (the simulator plays Pixazo on loopback); without
    # that, a loopback input is refused like any other.
    settings = make_settings(tmp_path, sim.url, poll_base_s=0.02, max_retries=0, allowed_image_hosts=["*.r2.dev"])
    result = await call(settings, "pix_upscale", {"image": "https://127.0.0.1:1/cat.png"})
    assert result.is_error
    assert "host 127.0.0.1 is not a public internet address" in result.content[0].text
    assert list(sim.stats.calls) == []
    assert rows(settings.db_path) == []
