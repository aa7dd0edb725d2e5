"""Start-up as an operator meets it: mistakes end in one line naming the variable and exit code 2,
"ready" means the port is bound, and --version answers (issue 11, points 11 and 12)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app import __version__
from tests.conftest import free_port


def pixazo(tmp_path: Path, *args: str, timeout: float = 90, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    environ |= {"PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
                "PIXAZO_PORT": str(free_port()), "PIXAZO_SECRETS_DIR": str(tmp_path / "no-secrets"), **env}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(("env", "expected"), [
    ({"PIXAZO_PORT": "abc"}, "PIXAZO_PORT='abc' is not valid: it accepts an integer from 0 to 65535"),
    ({"PIXAZO_INLINE_IMAGE": "big"}, "PIXAZO_INLINE_IMAGE='big' is not valid: it accepts one of thumbnail, none, full"),
    ({"PIXAZO_MAX_CONCURRENCY": "0"}, "PIXAZO_MAX_CONCURRENCY='0' is not valid: it accepts an integer >= 1"),
    ({"PIXAZO_ALLOW_ANONYMOUS": "maybe"}, "PIXAZO_ALLOW_ANONYMOUS='maybe' is not valid: it accepts true or false"),
    ({"PIXAZO_DB_PATH": "/proc/no-such-dir/pixazo.db"}, "PIXAZO_DB_PATH: cannot create /proc/no-such-dir"),
    ({"PIXAZO_IMAGE_DIR": "/proc/no-such-dir/images"}, "PIXAZO_IMAGE_DIR: cannot create /proc/no-such-dir/images"),
])
def test_a_bad_setting_ends_in_one_line_naming_the_variable_and_exit_code_2(
        tmp_path: Path, env: dict[str, str], expected: str) -> None:
    done = pixazo(tmp_path, "serve", **{"PIXAZO_PORT": str(free_port()), **env})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pixazo-mcp: {expected}")


def test_a_database_path_that_is_a_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    done = pixazo(tmp_path, "serve", PIXAZO_DB_PATH=str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"pixazo-mcp: PIXAZO_DB_PATH: {tmp_path} is a directory; it accepts a database file path\n"


def test_two_callers_with_the_same_token_are_refused_naming_both(tmp_path: Path) -> None:
    shared = "the-same-token-0123456789"
    done = pixazo(tmp_path, "serve", PIXAZO_AUTH_TOKENS=f"alice:{shared},carol:other-token-0123456789,bob:{shared}")
    assert done.returncode == 2
    assert done.stderr == "pixazo-mcp: callers 'alice' and 'bob' have the same token: give each its own\n"
    assert shared not in done.stderr + done.stdout


def test_version(tmp_path: Path) -> None:
    done = pixazo(tmp_path, "--version")
    assert done.returncode == 0
    assert done.stdout == f"pixazo-mcp {__version__}\n"


def test_ready_is_logged_only_once_the_port_is_bound(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        refused = pixazo(tmp_path, "serve", "--port", str(port), PIXAZO_LOG_FORMAT="text")
    assert refused.returncode != 0
    assert "address already in use" in refused.stdout.lower() + refused.stderr.lower()
    assert " ready" not in refused.stdout

    log = tmp_path / "server.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PIXAZO_")}
    environ |= {"PIXAZO_DB_PATH": str(tmp_path / "pixazo.db"), "PIXAZO_IMAGE_DIR": str(tmp_path / "images"),
                "PIXAZO_LOG_FORMAT": "text"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=environ,
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while f"ready on 127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        proc.terminate()
        proc.wait(15)


@pytest.mark.parametrize(("env", "expected"), [
    ({"PIXAZO_SESSION_SECRET": "too-short-0123456789"},
     "PIXAZO_SESSION_SECRET is shorter than 32 bytes: generate one with `openssl rand -hex 32`"),
    ({"PIXAZO_SESSION_SECRET": "REPLACE_WITH_A_LONG_RANDOM_SECRET"},
     "PIXAZO_SESSION_SECRET looks like a placeholder (it contains 'replace')"),
    ({"PIXAZO_SESSION_SECRET": "REPLACE_WITH_openssl_rand_hex_32"},
     "PIXAZO_SESSION_SECRET looks like a placeholder (it contains 'replace')"),
    ({"PIXAZO_SESSION_SECRET": "a-session-secret-for-tests-0123456789"},
     "PIXAZO_SESSION_SECRET looks like a placeholder (it contains 'secret')"),
    ({"PIXAZO_SESSION_SECRET": "changeme" * 5}, "PIXAZO_SESSION_SECRET looks like a placeholder"),
    ({"PIXAZO_SESSION_SECRET": "ab" * 20}, "PIXAZO_SESSION_SECRET has too few distinct characters to be random"),
    ({"PIXAZO_AUTH_TOKENS": "alice:REPLACE_WITH_A_LONG_RANDOM_TOKEN"},
     "PIXAZO_AUTH_TOKENS: the token of 'alice' looks like a placeholder (it contains 'replace')"),
])
def test_a_weak_or_placeholder_secret_is_refused_at_start(tmp_path: Path, env: dict[str, str],
                                                          expected: str) -> None:
    """Issue 19, point 1: any session secret was accepted, and the shipped manifests carry placeholders."""
    done = pixazo(tmp_path, "serve", **env)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pixazo-mcp: {expected}")
    secret = next(iter(env.values())).split(":")[-1]
    assert secret not in line



def test_a_server_on_sqlite_and_a_directory_loads_no_postgres_or_aws_code(tmp_path: Path) -> None:
    """The PostgreSQL driver and the AWS SDK cost 17 MB of memory: only a server that uses them loads them."""
    code = textwrap.dedent(f"""
        import asyncio, sys
        from app.core.state import open_state
        from app.settings import Settings
        import app.cli, app.web.app

        async def main():
            settings = Settings(_env_file=None, db_path={str(tmp_path / "p.db")!r},
                                image_dir={str(tmp_path / "images")!r})
            async with open_state(settings):
                pass

        asyncio.run(main())
        print(sorted(m for m in ("psycopg", "psycopg_pool", "aiobotocore", "botocore") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PIXAZO_SECRETS_DIR": str(tmp_path / "none")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
