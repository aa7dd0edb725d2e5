"""Real programs on loopback for the tests: start one in a temporary directory, wait until it answers,
always stop it.

`run_service` is the general part (any program that listens on a TCP port); `start_nginx` builds on it.
A test that needs a program the machine lacks is skipped locally and fails in CI (CI=true), where
.ci/run installs every program used here.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port

# Debian puts daemons in /usr/sbin, which a non-root PATH may lack.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")


def require_program(name: str, package: str) -> str:
    """The path of `name`; skips the test when it is missing locally, fails it in CI."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))
    if path is None:
        message = f"{name} is not installed (Debian package {package}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 20.0) -> None:
    """Block until 127.0.0.1:port accepts a connection; raise with the program's log if it exits or
    the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            output = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{proc.args!r} did not answer on port {port}:\n{output}")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Ask it to stop; kill it if it has not after timeout_s. Always reaps it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout_s)


@contextmanager
def run_service(argv: Sequence[str], port: int, log: Path, *, cwd: Path | None = None,
                env: Mapping[str, str] | None = None, stop_signal: int = signal.SIGTERM,
                start_timeout_s: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run `argv` (output to `log`), yield once it accepts connections on 127.0.0.1:port, stop it on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(env) if env is not None else None)
    try:
        wait_for_port(port, proc, log, start_timeout_s)
        yield proc
    finally:
        stop_process(proc, stop_signal)


@contextmanager
def start_nginx(tmp_path: Path, server: str, http: str = "") -> Iterator[int]:
    """A real nginx on a free loopback port; yields the port.

    `server` is the body of the one `server { }` block (its `listen` is added here); `http` holds any
    other directives of the `http { }` block (upstream, proxy_cache_path ...). Everything nginx writes
    (pid, temp files, logs) stays under tmp_path/nginx.
    """
    binary = require_program("nginx", "nginx-light")
    root = tmp_path / "nginx"
    root.mkdir(exist_ok=True)
    port = free_port()
    # As root, nginx would run its workers as "nobody", who cannot enter pytest's private tmp_path.
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = root / "nginx.conf"
    config.write_text(f"""{user}daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{http}
    server {{
        listen 127.0.0.1:{port};
{server}
    }}
}}
""")
    # -e: the error log before the config is read (the compiled-in default is under /var/log).
    argv = [binary, "-c", str(config), "-p", str(root), "-e", str(root / "error.log")]
    # SIGQUIT: a graceful stop, so workers exit with the master.
    with run_service(argv, port, root / "stdout.log", cwd=root, stop_signal=signal.SIGQUIT):
        yield port


def nginx_log(tmp_path: Path, name: str = "error.log") -> str:
    """What the nginx of start_nginx wrote to one of its logs (for assertion messages)."""
    path = tmp_path / "nginx" / name
    return path.read_text(errors="replace") if path.exists() else ""
