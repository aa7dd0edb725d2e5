"""The helpers that run real programs for the tests start them, reach them and always stop them."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from tests.services import nginx_log, start_nginx


def test_start_nginx_serves_the_given_server_block_and_stops_it_on_exit(tmp_path: Path) -> None:
    with start_nginx(tmp_path, 'location / { return 200 "hello from nginx"; }') as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.read() == b"hello from nginx"
        pid = int((tmp_path / "nginx" / "nginx.pid").read_text())
    assert pid > 0
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert "start worker process" in nginx_log(tmp_path)


def test_start_nginx_reports_a_bad_configuration_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="unknown directive"), start_nginx(tmp_path, "no_such_directive on;"):
        pass
