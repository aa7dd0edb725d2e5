"""The `pixazo-mcp` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from app import __version__
from app.settings import Settings, SettingsError


def _writable_dir(variable: str, directory: Path) -> None:
    """Create `directory` now, so that a path the server cannot use is a one-line start-up error."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{variable}: cannot create {directory} ({exc.strerror}); "
                            "it accepts a path in a directory the server can write") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SettingsError(f"{variable}: {directory} is not writable by this user; "
                            "it accepts a path in a directory the server can write")


def check_paths(settings: Settings) -> None:
    if settings.db_path.is_dir():
        raise SettingsError(f"PIXAZO_DB_PATH: {settings.db_path} is a directory; it accepts a database file path")
    _writable_dir("PIXAZO_DB_PATH", settings.db_path.parent)
    _writable_dir("PIXAZO_IMAGE_DIR", settings.image_dir)
    from app.storage.credentials import ContentCredentials

    ContentCredentials.from_settings(settings)  # C2PA asked for and impossible: one line, exit 2


def _serve(args: argparse.Namespace) -> int:
    from app.logs import configure_logging
    from app.web.app import create_app
    from app.web.lifecycle import InFlightRequests, run

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.demo:
        overrides["demo"] = True
    settings = Settings.load(**overrides)
    check_paths(settings)
    app = create_app(settings)
    configure_logging(settings.log_format, app.state.secrets)
    requests = InFlightRequests(app)
    run(requests, app.state.runtime, requests, settings)
    return 0


def _stdio(args: argparse.Namespace) -> int:
    """The same tools and resources over stdio, for one person on their own machine: the caller is
    `local`, no tokens, records and images in the local database and directory. Nothing but the protocol
    on stdout (logs go to stderr). OAuth, the gallery, upload links and signed links are HTTP things:
    off here (the tools that need them say so)."""
    from contextlib import AsyncExitStack

    from app.core.styles import load_styles
    from app.identity.tokens import LOCAL_CALLER
    from app.logs import configure_logging
    from app.protocol.server import build_server
    from app.web.app import start_demo

    settings = Settings.load(**({"demo": True} if args.demo else {}))
    settings = settings.model_copy(update={"public_url": None})  # nothing here is reachable from outside
    check_paths(settings)
    load_styles(settings)  # a bad PIXAZO_STYLES_FILE stops the start with one line (exit 2), before any I/O
    configure_logging(settings.log_format, [s.get_secret_value() for s in (settings.api_key,) if s is not None],
                      stream=sys.stderr)

    async def main() -> None:
        async with AsyncExitStack() as stack:
            effective = await start_demo(settings, stack) if settings.demo else settings
            LOCAL_CALLER.set("local")
            await build_server(effective).run_stdio_async()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


async def _serve_simulator(host: str, port: int, latency: float, api_key: str | None, look: str) -> None:
    from app.pixazo.gateway import SDXL_PATH
    from app.pixazo.simulator import Simulator

    sim = await Simulator(latency=latency, api_key=api_key, host=host, port=port, look=look).start()
    print(f"Pixazo simulator on {sim.url}{SDXL_PATH}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()


def _simulator(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_simulator(args.host, args.port, args.latency, args.api_key, args.images))
    return 0


def _backup(args: argparse.Namespace) -> int:
    from app.ops.backup import backup

    source = args.db or Settings.load().db_path
    target = Path(args.dest)
    written = target / Path(source).name if target.is_dir() else target
    if written.exists() and not args.force:
        print(f"pixazo-mcp backup: {written} exists; give --force to replace it", file=sys.stderr)
        return 2
    try:
        count = backup(Path(source), target)
    except (OSError, RuntimeError, sqlite3.Error) as exc:
        print(f"pixazo-mcp backup: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {count} generations from {source} to {args.dest}")
    return 0


def _oauth(args: argparse.Namespace) -> int:
    import psycopg

    from app.identity.oauth_admin import list_clients, revoke
    from app.storage.database import redacted, sqlite_path

    # The server's database (PostgreSQL too: replicas share the OAuth tables), unless --db names a file.
    database = f"sqlite:///{args.db}" if args.db else Settings.load().database
    if database.startswith("sqlite:///") and not sqlite_path(database).is_file():
        # Never create a database (an empty one would answer "no OAuth clients yet" for the wrong file).
        print(f"pixazo-mcp oauth: no database at {sqlite_path(database).resolve()} (set PIXAZO_DB_PATH or "
              "PIXAZO_DATABASE_URL, or give --db)", file=sys.stderr)
        return 2
    if args.oauth_command == "revoke" and (args.client_id is None) == (args.caller is None):
        print("pixazo-mcp oauth revoke: give a CLIENT_ID or --caller NAME (one of them)", file=sys.stderr)
        return 2
    try:
        if args.oauth_command == "clients":
            print("\n".join(asyncio.run(list_clients(database))))
            return 0
        found, message = asyncio.run(revoke(database, args.client_id, args.caller))
    except (OSError, ValueError, sqlite3.Error, psycopg.Error) as exc:
        # psycopg's messages name the host and port, never the password; the URL is shown redacted.
        print(f"pixazo-mcp oauth: the database {redacted(database)} failed: {exc}", file=sys.stderr)
        return 1
    print(message, file=sys.stdout if found else sys.stderr)
    return 0 if found else 1


def _migrate(args: argparse.Namespace) -> int:
    from app.ops.migrate import MigrateError, migrate_rows
    from app.storage.database import redacted

    settings = Settings.load()
    source = args.source or f"sqlite:///{settings.db_path}"
    # The target's password may stay out of the command line (and `ps`): PIXAZO_DATABASE_URL or its file.
    target = args.target or (settings.database if settings.uses_postgres else None)
    if target is None:
        print("pixazo-mcp migrate: give --to postgresql://... (or set PIXAZO_DATABASE_URL)", file=sys.stderr)
        return 2

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} rows", end="", file=sys.stderr, flush=True)

    try:
        report = migrate_rows(source, target, progress=progress)
    except (MigrateError, ValueError, OSError, sqlite3.Error) as exc:
        print(f"\npixazo-mcp migrate: {exc}", file=sys.stderr)
        return 1
    print(f"\ncopied {report.copied} generations ({report.already_there} were already there) from "
          f"{redacted(source)} to {redacted(target)}; {report.source_rows} rows verified")
    if args.images_to is None:
        return 0
    return _migrate_images(settings, source, Path(args.images_from) if args.images_from else None, args.images_to)


def _migrate_images(settings: Settings, source: str, images_from: Path | None, images_to: str) -> int:
    from app.core.state import open_blob_store
    from app.errors import BlobStoreError
    from app.ops.migrate import migrate_images
    from app.storage.blobs import LocalBlobStore

    try:
        # The target store from the same settings the server uses (endpoint, keys, secret files).
        target_settings = Settings.load(image_store=images_to)
    except ValueError as exc:
        print(f"pixazo-mcp migrate: --images-to: {exc}", file=sys.stderr)
        return 2
    local = images_from or settings.image_dir

    async def run() -> int:
        async with open_blob_store(target_settings) as target:
            report = await migrate_images(source, LocalBlobStore(local), target)
        print(f"copied {report.copied} images ({report.already_there} were already there) from {local} to "
              f"{images_to}; {report.verified} verified by their sha256")
        for key in report.missing:
            print(f"pixazo-mcp migrate: image {key} is missing", file=sys.stderr)
        for key in report.mismatched:
            print(f"pixazo-mcp migrate: image {key} does not match its row's sha256", file=sys.stderr)
        return 1 if report.missing or report.mismatched else 0

    try:
        return asyncio.run(run())
    except (BlobStoreError, OSError) as exc:
        print(f"pixazo-mcp migrate: images: {exc}", file=sys.stderr)
        return 1


def _bench(args: argparse.Namespace) -> int:
    from app.ops.bench import run

    return asyncio.run(run(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixazo-mcp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pixazo-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the MCP server (streamable HTTP on /mcp)")
    serve.add_argument("--host", default=None, help="address to bind (default: PIXAZO_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PIXAZO_PORT or 8000)")
    serve.add_argument("--demo", action="store_true", help="generate with the built-in Pixazo simulator")
    serve.set_defaults(func=_serve)

    stdio = sub.add_parser("stdio", help="serve over stdio, for one person on their own machine (Claude Desktop, "
                           "Claude Code, Cursor)")
    stdio.add_argument("--demo", action="store_true", help="generate with the built-in Pixazo simulator")
    stdio.set_defaults(func=_stdio)

    sim = sub.add_parser("simulator", help="run the Pixazo simulator alone")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8100)
    sim.add_argument("--latency", type=float, default=2.0, help="seconds per generation")
    sim.add_argument("--api-key", default=None, help="the only key it accepts (default: any)")
    sim.add_argument("--images", choices=("noise", "photo", "tiny"), default="noise",
                     help="what its images look like: gradients under noise, a photograph's statistics, 16 px")
    sim.set_defaults(func=_simulator)
    bench = sub.add_parser("bench", help="measure throughput and overhead against a minimal reference server")
    bench.add_argument("--calls", type=int, default=600, help="calls in all (N)")
    bench.add_argument("--concurrency", type=int, default=300, help="calls in flight at once (C)")
    bench.add_argument("--sessions", type=int, default=4, help="MCP client sessions the calls are spread over (S)")
    bench.add_argument("--latency", type=float, default=1.0, help="simulated Pixazo latency in seconds")
    bench.add_argument("--json", default=None, help="also write the results as JSON to this path")
    bench.add_argument("--url", default=None, help="benchmark a running server instead: its address, or its "
                       "/mcp endpoint")
    bench.add_argument("--token", default=None, help="bearer token for --url")
    bench.add_argument("--sweep", default=None, help="comma list of concurrencies to run in turn (for a chart)")
    bench.add_argument("--chart", default=None, help="write a PNG chart here (needs the 'bench' extra)")
    bench.add_argument("--no-reference", action="store_true", help="skip both yardstick servers")
    bench.add_argument("--no-keeper", action="store_true", help="skip the plain keeper")
    bench.add_argument("--images", default="photo,noise",
                       help="the simulator's looks to run, in turn: comma list of photo, noise, tiny")
    bench.add_argument("--no-image-costs", action="store_true", help="skip the per-image CPU figures")
    bench.add_argument("--repeat", type=int, default=1, help="rounds per server (alternating); the median is kept")
    bench.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                       help="extra setting for our server, e.g. PIXAZO_INLINE_IMAGE=none (repeatable)")
    bench.set_defaults(func=_bench)

    oauth = sub.add_parser("oauth", help="the OAuth authorization server's clients and tokens")
    oauth.add_argument("--db", default=None, help="a SQLite file (default: PIXAZO_DATABASE_URL, else PIXAZO_DB_PATH)")
    oauth_sub = oauth.add_subparsers(dest="oauth_command", required=True)
    oauth_sub.add_parser("clients", help="list registered clients and what they last did")
    oauth_revoke = oauth_sub.add_parser("revoke", help="end the tokens of a client, or of a caller")
    oauth_revoke.add_argument("client_id", nargs="?", default=None, metavar="CLIENT_ID")
    oauth_revoke.add_argument("--caller", default=None, metavar="NAME", help="every token signed in as NAME")
    oauth.set_defaults(func=_oauth)

    bak = sub.add_parser("backup", help="copy the database consistently while the server runs")
    bak.add_argument("dest", help="file (or directory) to write the copy to")
    bak.add_argument("--db", default=None, help="database to copy (default: PIXAZO_DB_PATH)")
    bak.add_argument("--force", action="store_true", help="replace DEST if it exists")
    bak.set_defaults(func=_backup)

    mig = sub.add_parser("migrate", help="copy a SQLite history (rows with their ids) to PostgreSQL; resumable")
    mig.add_argument("--from", dest="source", default=None,
                     help="sqlite:///PATH to copy from (default: the file at PIXAZO_DB_PATH)")
    mig.add_argument("--to", dest="target", default=None,
                     help="postgresql://USER:PASS@HOST:PORT/DB (default: PIXAZO_DATABASE_URL)")
    mig.add_argument("--images-to", default=None,
                     help="also copy the images to this store (s3://BUCKET/PREFIX, or a directory); "
                          "endpoint and keys as for the server (PIXAZO_S3_ENDPOINT_URL, AWS_*)")
    mig.add_argument("--images-from", default=None,
                     help="directory the images are in now (default: PIXAZO_IMAGE_DIR)")
    mig.set_defaults(func=_migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        # Configuration mistakes get one line and exit code 2 (like a usage error), never a traceback.
        print(f"pixazo-mcp: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
