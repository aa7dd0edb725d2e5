"""Every assumption we make about Pixazo's gateway, in one place: paths, bodies, answers, prices.

What is publicly known is in the project's shared docs (pixazo-api.md), with the strength of each
piece of evidence. Little was confirmed with a live call, so the answer parsers tolerate every
reported variant. The client (`app.pixazo.client`) sends what this module describes, and the simulator
(`app.pixazo.simulator`) answers from the same tables, so correcting a fact here corrects both.

Evidence, strongest first: `live` (a recorded call), `doc` (Pixazo's model pages), `skill` (Pixazo's
templated skills repository, sometimes wrong), `third-party` (other clients' code).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.errors import UpstreamProtocolError
from app.net import is_http_url

# --- Transport -----------------------------------------------------------------------------------
KEY_HEADER = "Ocp-Apim-Subscription-Key"
SDXL_PATH = "/getImage/v1/getSDXLImage"
# Queue models answer a job id; this generic route reports on any job (key header only).
STATUS_PATH = "/v2/requests/status/{request_id}"
# Answers larger than this are not a JSON URL document; stop reading rather than buffer them.
MAX_ANSWER_BYTES = 1 << 20
# The longest upstream error message we keep on a row.
MAX_ERROR_CHARS = 500


def request_headers(api_key: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Cache-Control": "no-cache", KEY_HEADER: api_key}


def poll_headers(api_key: str) -> dict[str, str]:
    return {"Cache-Control": "no-cache", KEY_HEADER: api_key}


# --- Answers -------------------------------------------------------------------------------------
# SDXL answers {"imageUrl": ...} (live); FLUX {"output": ...} (doc); queue results nest a list
# ({"output": {"media_url": [...]}}, doc). The first string found is the URL, and it must be http(s).
IMAGE_URL_FIELDS = ("imageUrl", "output")
# A queue model's submit answer: 202 {"request_id", "status": "QUEUED", "polling_url"} (doc); FLUX's
# batch route answers {"requestId", "status": "queued"} (doc, third-party).
REQUEST_ID_FIELDS = ("request_id", "requestId")
# Error bodies seen: {"error": ...}, {"error": ..., "message": ...}, Azure APIM {"statusCode", "message"},
# {"detail": ...} (what Pixazo's own studio client also reads), and plain text (live: a 500 with
# `Error processing request`). The first present field wins; else the text itself; else the reason.
ERROR_MESSAGE_FIELDS = ("error", "message", "detail")
# The live gateway's answer to a body field a model does not take (SDXL sent `guidance`, seen live).
UNKNOWN_FIELD_STATUS, UNKNOWN_FIELD_TEXT = 500, "Error processing request"

# Queue states (doc): QUEUED -> PROCESSING -> COMPLETED, or FAILED / ERROR. Older sources say
# IN_QUEUE / IN_PROGRESS; FLUX's batch route answers them in lower case. ERROR is "a system error,
# not charged"; nothing says whether FAILED is charged, so it is counted as charged.
QUEUED, PROCESSING, COMPLETED, FAILED, ERROR = "QUEUED", "PROCESSING", "COMPLETED", "FAILED", "ERROR"
STATE_ALIASES = {"IN_QUEUE": QUEUED, "IN_PROGRESS": PROCESSING, "SUCCEEDED": COMPLETED, "SUCCESS": COMPLETED}
TERMINAL_STATES = (COMPLETED, FAILED, ERROR)
NOT_CHARGED_STATES = (ERROR,)


def queue_state(raw: Any) -> str | None:
    """A job state in our spelling, or None when the answer has none we know."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    state = raw.strip().upper()
    state = STATE_ALIASES.get(state, state)
    return state if state in (QUEUED, PROCESSING, *TERMINAL_STATES) else None


def error_message(body: bytes, reason: str | None) -> str:
    """The gateway's own words for a failure: a known JSON field, else short plain text, else the reason."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for name in ERROR_MESSAGE_FIELDS:
            value = payload.get(name)
            if isinstance(value, str) and value.strip():
                return value.strip()[:MAX_ERROR_CHARS]
    elif payload is None:
        text = body.decode("utf-8", "replace").strip()
        if text and "<" not in text[:1]:  # plain text, not an HTML error page
            return text[:MAX_ERROR_CHARS]
    return (reason or "no reason given")[:MAX_ERROR_CHARS]


def _candidate_url(payload: Any) -> str | None:
    """The first URL-shaped value in any answer shape we know (see IMAGE_URL_FIELDS), unchecked."""
    if not isinstance(payload, dict):
        return None
    for name in IMAGE_URL_FIELDS:
        value = payload.get(name)
        if isinstance(value, str):
            return value
    nested = payload.get("output")
    if isinstance(nested, dict):
        urls = nested.get("media_url")
        if isinstance(urls, list) and urls and isinstance(urls[0], str):
            return urls[0]
        if isinstance(urls, str):
            return urls
    return None


def image_url_from(payload: Any) -> str:
    """Find the image URL in a success body, or raise UpstreamProtocolError.

    Whatever the shape, the URL must be http(s) before anything stores, returns or shows it: a
    `javascript:` link from the gateway would otherwise end up in the agent's result and the gallery.
    """
    url = _candidate_url(payload)
    if url is None:
        raise UpstreamProtocolError("the answer has no imageUrl")
    if not is_http_url(url):
        raise UpstreamProtocolError("the image URL in the answer is not an http(s) URL", detail=url)
    return url


def request_id_from(payload: Any) -> str | None:
    """A queue job's id, when the answer is a submitted job rather than an image."""
    if not isinstance(payload, dict):
        return None
    for name in REQUEST_ID_FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable() and "/" not in value:
            return value
    return None


# --- The catalogue -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """An inclusive range for one request field, and an optional step."""

    minimum: float
    maximum: float
    multiple_of: int | None = None


@dataclass(frozen=True)
class Arg:
    """One argument a tool takes for an endpoint, and how it goes on the wire.

    `default` None means "not sent unless the caller gives it". `kind` "image" marks an input image,
    which the server resolves to a URL Pixazo can fetch before sending.
    """

    wire: str
    kind: Literal["text", "int", "number", "image"] = "int"
    limit: Limit | None = None
    default: Any = None
    choices: tuple[int, ...] | None = None

    def accepts(self, value: Any) -> bool:
        """Whether a value is what the field takes on the wire (type, range, step, choices); an image is
        its URL. The simulator refuses by this rule, and the server checks callers' values by it first."""
        limit = self.limit
        if self.kind in ("text", "image"):
            return isinstance(value, str) and bool(value or self.kind == "text") and (
                limit is None or limit.minimum <= len(value) <= limit.maximum)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if self.choices is not None and value not in self.choices:
            return False
        if limit is None:
            return True
        if not limit.minimum <= value <= limit.maximum:
            return False
        return limit.multiple_of is None or int(value) % limit.multiple_of == 0


Operation = Literal["generate", "upscale", "remove_background", "inpaint", "outpaint"]
OPERATIONS: tuple[str, ...] = ("generate", "upscale", "remove_background", "inpaint", "outpaint")


@dataclass(frozen=True)
class Endpoint:
    """One Pixazo model: where it is, what it takes, how it answers, what it costs, and how we know."""

    model: str  # our name for it: the `model` column, and pix_generate's `model` argument
    operation: Operation
    title: str
    path: str
    kind: Literal["sync", "queue"]
    args: Mapping[str, Arg]  # our argument name -> how it is sent
    evidence: str
    fixed: Mapping[str, Any] = field(default_factory=dict)  # fields always sent
    # The field a sync answer carries the image's URL in (SDXL `imageUrl`, live; FLUX `output`, doc).
    answer_field: str = "imageUrl"
    # Published price per call in USD; None when none is published. `price_by` names the argument
    # whose value picks the tier in `price_tiers` (the upscaler is priced by scale). A call's price is
    # computed in one place, app.core.costs.Prices, which also applies the operator's prices file.
    price_usd: float | None = 0.0
    price_by: str | None = None
    price_tiers: Mapping[int, float] = field(default_factory=dict)

    def body(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body for these argument values (our names, defaults already merged; None = not sent)."""
        out: dict[str, Any] = {}
        for name, arg in self.args.items():
            value = values.get(name)
            if value is not None:
                out[arg.wire] = value
        return out | dict(self.fixed)


PROMPT = Limit(1, 2000)
NEGATIVE = Limit(0, 2000)
SIDE = Limit(512, 1536, multiple_of=8)
SEED = Limit(0, 4_294_967_295)

# SDXL Base 1.0: the seed tool's model. Body and `imageUrl` answer seen live; ranges from the model
# page (one source gives guidance_scale 1-15).
SDXL_LIMITS: dict[str, Limit] = {
    "prompt": PROMPT, "negative_prompt": NEGATIVE, "width": SIDE, "height": SIDE,
    "num_steps": Limit(1, 20), "guidance_scale": Limit(1, 15), "seed": SEED,
}

SDXL = Endpoint(
    model="sdxl", operation="generate", title="Stable Diffusion XL 1.0", path=SDXL_PATH, kind="sync",
    evidence="live",
    args={
        "prompt": Arg("prompt", "text", PROMPT),
        "negative_prompt": Arg("negative_prompt", "text", NEGATIVE),
        "width": Arg("width", "int", SIDE, 1024), "height": Arg("height", "int", SIDE, 1024),
        "num_steps": Arg("num_steps", "int", SDXL_LIMITS["num_steps"], 20),
        "guidance_scale": Arg("guidance_scale", "number", SDXL_LIMITS["guidance_scale"], 5),
        "seed": Arg("seed", "int", SEED, 42),
    },
)
# SDXL Lightning (doc): the same fields but `negativePrompt` and `guidance` (one source writes
# `negative_prompt`; the model page's table and example say camelCase).
SDXL_LIGHTNING = Endpoint(
    model="sdxl-lightning", operation="generate", title="SDXL Lightning",
    path="/sdxl_lightning/getImage/v1/getSDXLImage", kind="sync", evidence="doc",
    args={
        "prompt": Arg("prompt", "text", PROMPT),
        "negative_prompt": Arg("negativePrompt", "text", NEGATIVE),
        "width": Arg("width", "int", SIDE, 1024), "height": Arg("height", "int", SIDE, 1024),
        "num_steps": Arg("num_steps", "int", Limit(1, 20), 20),
        "guidance_scale": Arg("guidance", "number", Limit(1, 15), 5),
        "seed": Arg("seed", "int", SEED, 42),
    },
)
# FLUX.1 schnell (doc, third-party): no negative prompt, no guidance; num_steps 1-8 (default 4); one
# source caps the size at 1024 x 1024. Answers {"output": url}; some 2026 clients also poll a requestId.
FLUX_SCHNELL = Endpoint(
    model="flux-schnell", operation="generate", title="FLUX.1 schnell", path="/flux-1-schnell/v1/getData",
    kind="sync", evidence="doc",
    args={
        "prompt": Arg("prompt", "text", PROMPT),
        "width": Arg("width", "int", Limit(512, 1024, multiple_of=8), 1024),
        "height": Arg("height", "int", Limit(512, 1024, multiple_of=8), 1024),
        "num_steps": Arg("num_steps", "int", Limit(1, 8), 4),
        "seed": Arg("seed", "int", SEED, 42),
    },
    answer_field="output",
)
# Crystal upscaler (doc, skill): a queue model priced by scale tier. Before 2026-05-28 its path was
# /upscaler/v1/crystal-upscaler/generate.
UPSCALER = Endpoint(
    model="crystal-upscaler", operation="upscale", title="Crystal upscaler", path="/upscaler/v1/upscale",
    kind="queue", evidence="doc",
    args={"image": Arg("image", "image"), "scale": Arg("scale_factor", "int", None, 2, choices=(2, 4, 6, 8))},
    price_by="scale", price_tiers={2: 0.07, 4: 0.12, 6: 0.23, 8: 0.45},
)
# Bria RMBG 2.0 background removal (doc): a queue model, $0.018 a call.
REMOVE_BACKGROUND = Endpoint(
    model="bria-rmbg-2.0", operation="remove_background", title="Bria background removal 2.0",
    path="/bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request", kind="queue", evidence="doc",
    args={"image": Arg("image_url", "image")}, price_usd=0.018,
)
# SD 1.5 inpainting (doc, third-party): sync, `imageUrl` answer. The model page's table says
# `negativePrompt`; every example sends `negative_prompt`, which we follow.
INPAINT = Endpoint(
    model="sd-inpainting", operation="inpaint", title="Stable Diffusion inpainting",
    path="/inpainting/v1/getImage", kind="sync", evidence="doc",
    args={
        "prompt": Arg("prompt", "text", PROMPT),
        "image": Arg("imageUrl", "image"), "mask": Arg("maskUrl", "image"),
        "negative_prompt": Arg("negative_prompt", "text", NEGATIVE),
        "width": Arg("width", "int", SIDE), "height": Arg("height", "int", SIDE),
        "num_steps": Arg("num_steps", "int", Limit(1, 50)),
        "guidance_scale": Arg("guidance", "number", Limit(1, 15)),
        "seed": Arg("seed", "int", SEED),
    },
)
# Outpainting (skill only: the answer shape is a guess, so the client accepts an image URL or a job).
# No published price.
OUTPAINT = Endpoint(
    model="image-outpaint", operation="outpaint", title="Outpainting",
    path="/image-outpaint/v1/image-outpaint-request", kind="queue", evidence="skill",
    args={"image": Arg("image_url", "image"),
          "zoom_out_percentage": Arg("zoom_out_percentage", "int", Limit(1, 90), 20)},
    fixed={"num_images": 1, "output_format": "png"}, price_usd=None,
)

CATALOGUE: dict[str, Endpoint] = {e.model: e for e in
                                  (SDXL, SDXL_LIGHTNING, FLUX_SCHNELL, UPSCALER, REMOVE_BACKGROUND, INPAINT, OUTPAINT)}
# pix_generate's `model` choices, the default first.
GENERATE_MODELS: tuple[str, ...] = tuple(e.model for e in CATALOGUE.values() if e.operation == "generate")
# The one endpoint of each editing operation.
EDITORS: dict[str, Endpoint] = {e.operation: e for e in CATALOGUE.values() if e.operation != "generate"}
# The largest image a text-to-image model makes (SDXL: 1536 x 1536).
GENERATE_MAX_PIXELS = int(SIDE.maximum * SIDE.maximum)


def _widest(name: str) -> Limit:
    limits = [e.args[name].limit for e in CATALOGUE.values() if name in e.args and e.args[name].limit]
    steps = {lim.multiple_of for lim in limits if lim is not None}
    return Limit(min(lim.minimum for lim in limits if lim is not None),
                 max(lim.maximum for lim in limits if lim is not None),
                 steps.pop() if len(steps) == 1 else None)


# The widest range any model takes for each bounded argument (what a tool spanning models advertises;
# the chosen model's own range is checked after, naming it).
WIDEST: dict[str, Limit] = {name: _widest(name) for name in
                            ("prompt", "negative_prompt", "width", "height", "num_steps", "guidance_scale", "seed")}
