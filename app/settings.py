"""Configuration: one Settings object built at start-up and passed down."""

from __future__ import annotations

import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.pixazo.gateway import GENERATE_MAX_PIXELS

# The largest image any supported model makes (SDXL: 1536 x 1536); nothing larger is a Pixazo image.
MODEL_MAX_PIXELS = GENERATE_MAX_PIXELS


class SettingsError(ValueError):
    """The configuration cannot be served; the message is one line naming the variable and the fix."""


def comma_list(value: Any) -> Any:
    """`a, b,c` -> ["a", "b", "c"]; lists pass through."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def caller_budgets(text: str) -> dict[str, float | None]:
    """`alice:5, bob:0.5, ops:none` -> {"alice": 5.0, "bob": 0.5, "ops": None}; raises ValueError."""
    out: dict[str, float | None] = {}
    for item in comma_list(text):
        name, sep, amount = item.rpartition(":")
        name, amount = name.strip(), amount.strip()
        if not sep or not name or name in out:
            raise ValueError(f"{item!r} is not a new caller:USD pair")
        if amount.lower() == "none":
            out[name] = None
            continue
        try:
            value = float(amount)
        except ValueError:
            raise ValueError(f"{item!r}: {amount!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{item!r}: a budget is a number >= 0")
        out[name] = value
    return out


# Words that mark text copied from an example rather than generated (the shipped manifests say REPLACE_...).
PLACEHOLDER_WORDS = ("replace", "changeme", "change_me", "change-me", "placeholder", "example", "your_", "todo")
# A secret that signs things needs more: none of these either, and enough bytes and variety to be random.
WEAK_SECRET_WORDS = (*PLACEHOLDER_WORDS, "secret", "password", "default", "insecure", "xxxx")
MIN_SECRET_BYTES = 32


def placeholder_word(value: str, words: tuple[str, ...] = PLACEHOLDER_WORDS) -> str | None:
    """The placeholder word a configured value contains, if any (case-insensitive)."""
    low = value.lower()
    return next((word for word in words if word in low), None)


def weak_secret(value: str) -> str | None:
    """Why a signing secret is too weak to serve with, or None. Generate one: `openssl rand -hex 32`."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    if (word := placeholder_word(value, WEAK_SECRET_WORDS)) is not None:
        return f"looks like a placeholder (it contains {word!r})"
    if len(set(value)) < 10:
        return "has too few distinct characters to be random"
    return None


# Settings that name a file which may itself be a container secret (see Settings.load).
FILE_SECRETS = ("c2pa_cert_file", "c2pa_key_file")


class Settings(BaseSettings):
    """Every knob of the server. Environment variables carry the `PIXAZO_` prefix."""

    model_config = SettingsConfigDict(
        env_prefix="PIXAZO_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    api_key: SecretStr | None = Field(default=None, description="Pixazo subscription key.")
    base_url: str = Field(default="https://gateway.pixazo.ai", description="Pixazo gateway base URL.")
    db_path: Path = Field(default=Path("./data/pixazo.db"), description="SQLite database file.")
    # A secret: a PostgreSQL URL carries its password (also readable as a secret file).
    database_url: SecretStr | None = Field(
        default=None, description="sqlite:///PATH (default: from PIXAZO_DB_PATH) or postgresql://USER:PASS@HOST:PORT/DB.")
    db_pool_size: int = Field(default=10, ge=1, description="PostgreSQL connections per process.")
    lease_s: float = Field(default=30.0, gt=0, description="Seconds an instance's claim on its calls in flight "
                           "lasts without renewal; after that any live instance marks them INTERRUPTED.")
    stateless_legacy: bool | None = Field(
        default=None, description="Serve 2025-11-25 clients statelessly (default: on with PostgreSQL).")
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind.")

    default_width: int = 1024
    default_height: int = 1024
    default_num_steps: int = 20
    default_guidance_scale: float = 5
    default_seed: int = 42

    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP connect budget to Pixazo.")
    timeout_s: float = Field(default=120.0, gt=0, description="One attempt's total budget.")
    max_concurrency: int = Field(default=32, ge=1, description="Calls in flight to Pixazo at once.")
    queue_timeout_s: float = Field(default=300.0, gt=0, description="How long a call may wait for a slot.")
    max_retries: int = Field(default=3, ge=0, description="Retries after the first attempt (429/502/503/504).")
    deadline_s: float = Field(default=300.0, gt=0, description="One call's overall budget across retries.")
    answer_within_s: float = Field(default=40.0, ge=1, le=3600, description=(
        "Longest an image-making call holds its client: a call not finished by then answers PENDING with "
        "its id and goes on in the background (collect it with pix_wait). Under the clients' own limits "
        "(Claude.ai about 45 s, Claude Desktop about 60 s)."))
    max_background_per_caller: int = Field(default=16, ge=1, description=(
        "Unfinished generations one caller may have at once (waiting or in the background); beyond it a "
        "call is refused with nothing sent."))
    poll_base_s: float = Field(default=1.0, gt=0, description="First wait before polling a queue job; "
                               "each later wait is 1.5 times longer.")
    poll_cap_s: float = Field(default=10.0, gt=0, description="Longest wait between two polls of a queue job.")
    job_resume_s: float = Field(default=3600.0, gt=0, description=(
        "How long after its call was received a queue job is still polled when it is resumed (by a "
        "restarted server or a surviving replica); past it the row ends TIMEOUT with the job's request id."))
    resume_concurrency: int = Field(default=8, ge=1, description=(
        "Resumed queue jobs polled at once; the others wait their turn (their rows stay PENDING)."))
    retry_base_s: float = Field(default=1.0, ge=0, description="First backoff step (doubles, jittered).")
    retry_cap_s: float = Field(default=30.0, ge=0, description="Longest backoff step.")
    breaker_threshold: int = Field(default=5, ge=1, description="Consecutive gateway failures that open it.")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="Seconds open before one probe.")
    shutdown_grace_s: float = Field(default=30.0, ge=0, description="On SIGTERM, how long calls may finish.")
    header_timeout_s: float = Field(default=10.0, gt=0, le=30, description=(
        "Seconds a client has to send a request's headers (and a form's body) before it is closed."))
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest request head (line + headers).")
    max_connections: int = Field(default=1000, ge=1, description=(
        "Connections and requests at once; over it a request gets 503 (SSE streams count)."))
    max_form_bytes: int = Field(default=8192, ge=256, description=(
        "Largest body of a POST that is not MCP (the /login form); urlencoded only."))

    image_dir: Path = Field(default=Path("./data/images"), description="Where downloaded images are kept.")
    image_store: str | None = Field(
        default=None, description="Where images are kept: a directory, or s3://BUCKET/PREFIX (default: image_dir).")
    s3_endpoint_url: str | None = Field(
        default=None, description="An S3-compatible store's URL (SeaweedFS, MinIO...); unset for AWS S3.")
    # The standard AWS names, without our prefix, so existing tooling and secrets fit. Unset: botocore's
    # own chain (instance roles, web identity).
    aws_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID", "aws_access_key_id"))
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"))
    aws_region: str | None = Field(default=None, validation_alias=AliasChoices("AWS_REGION", "aws_region"))
    allowed_image_hosts: Annotated[list[str], NoDecode] = Field(
        default=["*.r2.dev"], description="Hosts images may be downloaded from (names or *.suffix).")
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description="Largest image downloaded.")
    max_image_pixels: int = Field(
        default=MODEL_MAX_PIXELS, gt=0,
        description="Largest image (width x height) kept or decoded; checked from the header before any decode.")
    max_edit_pixels: int = Field(
        default=8192 * 8192, gt=0, description=(
            "Largest image (width x height) the editing tools keep (an 8x upscale of 1024 x 1024 is 8192 x 8192)."))
    max_edit_bytes: int = Field(default=256 * 1024 * 1024, gt=0,
                                description="Largest image the editing tools keep, in bytes.")
    upstream_url_fresh_s: float = Field(default=3600.0, ge=0, description=(
        "An editing tool hands Pixazo a generation's own Pixazo URL while it is younger than this; older, "
        "a signed link to the stored copy when PIXAZO_PUBLIC_URL is set."))
    signed_link_ttl_s: int = Field(default=600, ge=10, le=3600, description=(
        "Seconds a signed link to an input image (handed to Pixazo) works."))
    max_downloads: int = Field(default=16, ge=1, description="Image downloads in progress at once.")
    upload_link_ttl_s: int = Field(default=900, ge=1, le=86400, description=(
        "Seconds a one-time upload link (pix_upload_link) works."))
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description=(
        "Largest image a caller may bring in (an upload, a data: URI, a ChatGPT file), in bytes."))
    max_open_upload_links_per_caller: int = Field(default=20, ge=1, description=(
        "Upload links one caller may hold unused at once."))
    image_workers: int = Field(default=os.cpu_count() or 2, ge=1,
                               description="Threads that decode images for thumbnails.")
    c2pa_cert_file: Path | None = Field(default=None, description=(
        "C2PA signing certificate chain (PEM, end-entity first); with PIXAZO_C2PA_KEY_FILE, every kept image "
        "gets signed Content Credentials (needs pixazo-mcp[c2pa])."))
    c2pa_key_file: Path | None = Field(default=None, description="The private key (PEM) of that certificate.")
    inline_image: Literal["thumbnail", "none", "full"] = Field(
        default="thumbnail", description="What pix_generate returns inline besides the link.")
    progress_interval_s: float = Field(default=5.0, gt=0, description="Seconds between progress heartbeats.")
    max_extra_arguments: int = Field(default=16, ge=0, le=1000,
                                     description="Extra (unknown) pix_generate arguments kept per call.")
    max_extra_depth: int = Field(default=4, ge=0, le=32,
                                 description="Lists/objects nested inside one extra argument.")
    max_extra_bytes: int = Field(default=4096, ge=0, le=1 << 20,
                                 description="All extra arguments of a call, as compact UTF-8 JSON.")

    auth_tokens: SecretStr | None = Field(default=None, description="Comma list of name:token pairs.")
    auth_tokens_file: Path | None = Field(default=None, description="File with one name:token a line.")
    allow_anonymous: bool = Field(default=False, description="Serve without tokens on a non-loopback bind.")
    history_visibility: Literal["team", "own"] = Field(
        default="team", description="team: every caller sees every generation; own: only its own.")
    operators: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "Callers who see the whole server: /metrics and /healthz's details. Under `team` every caller does; "
        "under `own` only these."))
    auth_failure_limit: int = Field(default=5, ge=1, description=(
        "Failed authentications in a row from one client address before it is slowed down."))
    auth_block_max_s: float = Field(default=300.0, gt=0, description=(
        "Longest block (429) of an address that keeps failing; blocks double from 1 s up to it."))
    max_sessions_per_caller: int = Field(default=64, ge=1, description=(
        "Legacy /mcp sessions and /sse streams one caller may hold open at once (429 over it)."))
    max_sessions: int = Field(default=512, ge=1, description=(
        "Legacy /mcp sessions and /sse streams open at once, all callers together (503 over it)."))
    session_idle_timeout_s: float = Field(default=600.0, gt=0, description=(
        "A legacy /mcp session with no request for this long is closed."))
    rate_limit_per_minute: int | None = Field(default=None, ge=1, description="Calls per caller per minute.")
    daily_limit: int | None = Field(default=None, ge=1, description="Generations per caller per UTC day.")
    prices_file: Path | None = Field(default=None, description=(
        "JSON file of prices per model (US dollars per call) over the catalogue's published ones."))
    styles_file: Path | None = Field(default=None, description=(
        "YAML (or .json) file of team styles: prompt templates with default arguments, offered as `style`."))
    daily_budget_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False, description=(
        "What one caller may spend per UTC day, in US dollars (unset: no cap)."))
    caller_budgets_usd: Annotated[dict[str, float | None], NoDecode] = Field(default_factory=dict, description=(
        "Per-caller daily budgets over the default: alice:5,bob:0.5 (none: no cap for that caller)."))
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host headers accepted on /mcp (empty: loopback names only).")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origin headers accepted on /mcp (empty: loopback origins only).")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: JSON lines unless stdout is a terminal.")
    log_prompt_chars: int = Field(default=80, ge=0, description="Longest prompt excerpt written to a log line.")

    session_secret: SecretStr | None = Field(
        default=None, description="Signs gallery session cookies (default: a new key each start).")
    secure_cookies: bool = Field(default=False, description="Send the gallery cookie over https only.")

    public_url: str | None = Field(
        default=None, description="External https base URL; turns on the OAuth authorization server.")
    oauth_registrations_per_hour: int = Field(
        default=20, ge=1,
        description="Dynamic client registrations accepted per client address (IPv6: per /64) per hour.")
    oauth_registrations_total_per_hour: int = Field(
        default=500, ge=1, description="Dynamic client registrations accepted per hour from all addresses together.")
    oauth_ca_file: Path | None = Field(
        default=None, description="Extra CA bundle trusted when fetching client metadata documents.")
    oauth_metadata_loopback_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="For tests only: hosts whose metadata documents may be on loopback.")
    oidc_issuer: str | None = Field(default=None, description="The team's OpenID provider (single sign-on).")
    oidc_client_id: str | None = Field(default=None, description="This server's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(default=None, description="Its client secret.")
    oidc_name: str | None = Field(default=None, description="The provider's name on the sign-in button.")
    oidc_callers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Rules mapping e-mail addresses, domains or groups to callers.")
    oidc_groups_claim: str = Field(default="groups", description="The ID token claim that lists groups.")

    demo: bool = Field(default=False, description="Serve against the built-in Pixazo simulator.")

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the environment, a .env file, and a secrets directory (one file per variable,
        named like it: PIXAZO_API_KEY, PIXAZO_AUTH_TOKENS), the container-secret form.

        The directory is PIXAZO_SECRETS_DIR, else /run/secrets when it exists. The environment wins.
        """
        secrets_dir = os.environ.get("PIXAZO_SECRETS_DIR", "/run/secrets")
        if Path(secrets_dir).is_dir():
            overrides["_secrets_dir"] = secrets_dir
            # The C2PA certificate and key are files already: a secret file named like the variable is
            # the PEM itself, so the setting is its path (never its contents read as a path).
            for field in FILE_SECRETS:
                secret = Path(secrets_dir) / f"PIXAZO_{field.upper()}"
                if f"PIXAZO_{field.upper()}" not in os.environ and field not in overrides and secret.is_file():
                    overrides[field] = secret
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise SettingsError(explain(exc)) from None

    @property
    def database(self) -> str:
        """The database URL in force: PIXAZO_DATABASE_URL, else the SQLite file at PIXAZO_DB_PATH."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.db_path}"

    @property
    def uses_postgres(self) -> bool:
        return self.database.startswith(("postgresql://", "postgres://"))

    def is_operator(self, caller: str | None) -> bool:
        """Whether a verified caller may see the whole server (every caller's counts, spend, the breaker):
        under `team` everyone already sees everyone's history; under `own`, PIXAZO_OPERATORS only."""
        return self.history_visibility == "team" or (caller is not None and caller in self.operators)

    @property
    def legacy_stateless(self) -> bool:
        """Several replicas behind a round-robin balancer cannot share 2025-11-25 sessions."""
        return self.uses_postgres if self.stateless_legacy is None else self.stateless_legacy

    @field_validator("image_store")
    @classmethod
    def _image_store(cls, value: str | None) -> str | None:
        # A directory, or s3://BUCKET[/PREFIX]; any other URL is a typo (gs://, http://), not a folder name.
        if value is None or not value.strip():
            return None
        if "://" in value:
            scheme, _, rest = value.partition("://")
            bucket = rest.split("/", 1)[0]
            if scheme != "s3" or not bucket or "?" in rest or "#" in rest:
                raise ValueError("PIXAZO_IMAGE_STORE must be a directory or s3://BUCKET/PREFIX")
        return value

    @field_validator("caller_budgets_usd", mode="before")
    @classmethod
    def _caller_budgets(cls, value: Any) -> Any:
        return caller_budgets(value) if isinstance(value, str) else value

    @field_validator("allowed_image_hosts", "allowed_hosts", "allowed_origins", "oauth_metadata_loopback_hosts",
                     "oidc_callers", "operators", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        return comma_list(value)


def _accepts(info: FieldInfo) -> str:
    """What a field accepts, in an operator's words, from its type and bounds."""
    kind = info.annotation
    optional = False
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, kind = len(args) < len(typing.get_args(kind)), args[0]
    if typing.get_origin(kind) is Literal:
        text = "one of " + ", ".join(str(a) for a in typing.get_args(kind))
    elif kind is bool:
        text = "true or false"
    elif kind in (int, float):
        text = "an integer" if kind is int else "a number"
        bounds = []
        for rule in info.metadata:  # annotated_types' Ge, Gt, Le, Lt, as Field(ge=...) leaves them
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(rule, attr, None) is not None:
                    bounds.append(f"{sign} {getattr(rule, attr)}")
        if len(bounds) == 2 and bounds[0].startswith(">=") and bounds[1].startswith("<="):
            bounds = [f"from {bounds[0][3:]} to {bounds[1][3:]}"]
        text += (" " + " and ".join(bounds)) if bounds else ""
    elif kind is Path:
        text = "a file system path"
    elif typing.get_origin(kind) is list:
        text = "a comma-separated list"
    elif typing.get_origin(kind) is dict:
        text = "a comma-separated list of caller:USD (a number >= 0, or none)"
    else:
        text = "text"
    return text + (" (or unset)" if optional else "")


def explain(error: ValidationError) -> str:
    """One line for all of a ValidationError of Settings: each variable, what it got, what it accepts."""
    parts: list[str] = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        info = Settings.model_fields.get(field)
        if info is None:
            parts.append(f"{field or 'settings'}: {item['msg']}")
            continue
        name = f"PIXAZO_{field.upper()}"
        secret = info.annotation in (SecretStr, SecretStr | None)
        got = "" if secret or not isinstance(item.get("input"), str | int | float) else f"={item['input']!r:.60}"
        parts.append(f"{name}{got} is not valid: it accepts {_accepts(info)}")
    return "; ".join(parts)
