"""pix_generate in memory, with Pixazo faked at the HTTP edge by aioresponses."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from app.pixazo.gateway import KEY_HEADER, SDXL_PATH
from app.pixazo.simulator import render_png
from app.settings import Settings
from tests.conftest import TEST_KEY, in_memory_client, make_settings, rows

BASE = "https://gateway.example.test"
SDXL = BASE + SDXL_PATH
IMAGE = "https://pub-abc.r2.dev/image-1.png"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, BASE)


class _Response(aiohttp.ClientResponse):
    """aiohttp 3.14 made `stream_writer` a required argument that aioresponses 0.7.9 does not pass
    (pnuckowski/aioresponses#289, fix pending in #288). aiohttp only reads its `output_size`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


PNG = render_png("fixture", 1, 256, 256)


class Upstream(aioresponses):  # type: ignore[misc]
    def post(self, url: str, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _Response)
        super().post(url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _Response)
        super().get(url, **kwargs)

    def succeed(self) -> None:
        """Pixazo answers with an image URL, and the image host serves a PNG there."""
        self.post(SDXL, payload={"imageUrl": IMAGE})
        self.get(IMAGE, body=PNG, content_type="image/png")


@pytest.fixture
def upstream() -> Any:
    with Upstream() as mocked:
        yield mocked


def sent_requests(upstream: Any) -> list[Any]:
    return upstream.requests.get(("POST", URL(SDXL)), [])


async def call(settings: Settings, arguments: dict[str, Any]) -> Any:
    async with in_memory_client(settings) as client:
        return await client.call_tool("pix_generate", arguments)


async def test_defaults_fill_every_parameter_the_caller_left_out(settings: Settings, upstream: Any) -> None:
    upstream.succeed()
    result = await call(settings, {"prompt": "a red fox"})
    assert not result.is_error
    body = sent_requests(upstream)[0].kwargs["json"]
    assert body == {"prompt": "a red fox", "width": 1024, "height": 1024, "num_steps": 20,
                    "guidance_scale": 5.0, "seed": 42}


async def test_caller_values_override_defaults_and_configured_defaults_apply(tmp_path: Path,
                                                                             upstream: Any) -> None:
    settings = make_settings(tmp_path, BASE, default_width=768, default_seed=7)
    upstream.succeed()
    await call(settings, {"prompt": "p", "height": 512, "num_steps": 4, "guidance_scale": 7.5,
                          "negative_prompt": "blur"})
    body = sent_requests(upstream)[0].kwargs["json"]
    assert body == {"prompt": "p", "negative_prompt": "blur", "width": 768, "height": 512, "num_steps": 4,
                    "guidance_scale": 7.5, "seed": 7}


async def test_the_exact_request_sent_to_pixazo(settings: Settings, upstream: Any) -> None:
    upstream.succeed()
    await call(settings, {"prompt": "a lighthouse", "seed": 3})
    (request,) = sent_requests(upstream)
    headers = request.kwargs["headers"]
    assert headers[KEY_HEADER] == TEST_KEY
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-cache"
    assert "negative_prompt" not in request.kwargs["json"]
    assert isinstance(request.kwargs["timeout"], aiohttp.ClientTimeout)


async def test_success_returns_the_url_and_structured_content_and_records_the_row(
        settings: Settings, upstream: Any) -> None:
    upstream.succeed()
    result = await call(settings, {"prompt": "a red fox", "width": 512})
    assert not result.is_error
    assert IMAGE in result.content[0].text
    sc = result.structured_content
    assert sc["status"] == "SUCCESS"
    assert sc["image_url"] == IMAGE
    assert sc["prompt"] == "a red fox"
    assert sc["parameters"]["width"] == 512
    (row,) = rows(settings.db_path)
    assert row["id"] == sc["id"]
    assert row["status"] == "SUCCESS"
    assert row["image_url"] == IMAGE
    assert row["prompt"] == "a red fox"
    assert json.loads(row["parameters_json"])["width"] == 512
    assert row["duration_ms"] is not None


async def test_extra_arguments_are_kept_on_the_row_but_not_sent(settings: Settings, upstream: Any) -> None:
    upstream.succeed()
    result = await call(settings, {"prompt": "p", "team": "design", "ticket": 42, "tags": ["a", "b"]})
    assert not result.is_error
    body = sent_requests(upstream)[0].kwargs["json"]
    assert "team" not in body
    assert "ticket" not in body
    params = json.loads(rows(settings.db_path)[0]["parameters_json"])
    assert params["team"] == "design"
    assert params["ticket"] == 42
    assert params["tags"] == ["a", "b"]
    assert params["seed"] == 42


async def test_the_input_schema_allows_additional_properties(settings: Settings) -> None:
    async with in_memory_client(settings) as client:
        (tool,) = [t for t in (await client.list_tools()).tools if t.name == "pix_generate"]
    assert tool.input_schema["additionalProperties"] is True
    assert tool.input_schema["required"] == ["prompt"]


@pytest.mark.parametrize(
    ("status", "kwargs", "expected_error"),
    [
        (401, {"payload": {"statusCode": 401, "message": "Access denied due to invalid key."}},
         "Access denied due to invalid key."),
        (500, {"payload": {"error": "Model crashed"}}, "Model crashed"),
        (500, {"body": "Error processing request", "content_type": "text/plain"}, "Error processing request"),
        (403, {"payload": {"error": "Insufficient Balance", "message": "Top up"}}, "Insufficient Balance"),
    ],
)
async def test_http_errors_become_http_status_rows_and_tool_errors(
        settings: Settings, upstream: Any, status: int, kwargs: dict[str, Any], expected_error: str) -> None:
    upstream.post(SDXL, status=status, **kwargs)
    result = await call(settings, {"prompt": "p"})
    assert result.is_error
    text = result.content[0].text
    assert f"Pixazo answered HTTP {status}:" in text
    (row,) = rows(settings.db_path)
    assert row["status"] == f"HTTP_{status}"
    assert row["http_status"] == status
    # the row's `error` is the caller's message (any caller may read it); Pixazo's words are for operators
    assert row["error"] == text[text.index("Pixazo answered"):]
    assert row["upstream_error"] == expected_error
    assert expected_error not in text
    assert row["image_url"] is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"body": "<html>oops</html>", "content_type": "text/html"}, "not valid JSON"),
        ({"body": '{"imageUrl": "https://pub', "content_type": "application/json"}, "not valid JSON"),
        ({"payload": {"status": "done"}}, "no imageUrl"),
    ],
)
async def test_unusable_answers_become_exception_rows(settings: Settings, upstream: Any,
                                                      kwargs: dict[str, Any], error: str) -> None:
    upstream.post(SDXL, status=200, **kwargs)
    result = await call(settings, {"prompt": "p"})
    assert result.is_error
    assert error in result.content[0].text
    (row,) = rows(settings.db_path)
    assert row["status"] == "EXCEPTION"
    assert error in row["error"]
    assert error in row["upstream_error"]


async def test_connection_refused_becomes_an_exception_row(tmp_path: Path) -> None:
    from tests.conftest import free_port

    settings = make_settings(tmp_path, f"http://127.0.0.1:{free_port()}")
    result = await call(settings, {"prompt": "p"})
    assert result.is_error
    assert "could not reach Pixazo" in result.content[0].text
    (row,) = rows(settings.db_path)
    assert row["status"] == "EXCEPTION"
    assert row["error"] == "The server could not reach Pixazo. Try again in a minute."
    assert row["upstream_error"] == "could not connect to Pixazo"


async def test_no_key_configured_fails_without_calling_pixazo(tmp_path: Path, upstream: Any) -> None:
    settings = make_settings(tmp_path, BASE, api_key=None)
    result = await call(settings, {"prompt": "p"})
    assert result.is_error
    assert "PIXAZO_API_KEY" in result.content[0].text
    assert sent_requests(upstream) == []
    assert rows(settings.db_path)[0]["status"] == "EXCEPTION"


async def test_the_key_never_appears_in_results_rows_or_logs(settings: Settings, upstream: Any,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    upstream.succeed()
    upstream.post(SDXL, status=401, payload={"error": "bad key"})
    upstream.post(SDXL, exception=aiohttp.ServerDisconnectedError())
    upstream.post(SDXL, exception=aiohttp.ClientConnectionError(f"boom {TEST_KEY}"))
    texts = []
    async with in_memory_client(settings) as client:
        for _ in range(4):
            result = await client.call_tool("pix_generate", {"prompt": "p"})
            texts.append(json.dumps(result.model_dump(mode="json")))
    assert all(TEST_KEY not in t for t in texts)
    assert TEST_KEY not in caplog.text
    assert TEST_KEY not in settings.db_path.read_bytes().decode("latin-1")
    assert TEST_KEY not in repr(settings)
    assert [r["status"] for r in rows(settings.db_path)] == ["SUCCESS", "HTTP_401", "EXCEPTION", "EXCEPTION"]


async def test_out_of_range_arguments_are_refused_by_name_and_range_without_an_upstream_call(
        settings: Settings, upstream: Any) -> None:
    result = await call(settings, {"prompt": "p", "width": 4000, "seed": -1})
    assert result.is_error
    text = result.content[0].text
    assert "`width` must be an integer from 512 to 1536, a multiple of 8" in text
    assert "`seed` must be an integer from 0 to 4294967295" in text
    assert sent_requests(upstream) == []
