"""The MCP Registry entry (issue 24): server.json validates against the registry's own schema (copied
into schemas/, see its README), names this package and its stdio command, and agrees with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from app import __version__

ROOT = Path(__file__).parent.parent


def test_server_json_validates_against_the_registry_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "server.schema.json").read_text())
    server = json.loads((ROOT / "server.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(server), key=str)
    assert [e.message for e in errors] == []
    assert server["$schema"] == schema["$id"]


def test_server_json_agrees_with_the_package_and_the_readme() -> None:
    server = json.loads((ROOT / "server.json").read_text())
    (package,) = server["packages"]
    assert (package["registryType"], package["identifier"]) == ("pypi", "pixazo-mcp")
    assert package["version"] == server["version"] == __version__
    assert package["transport"] == {"type": "stdio"}
    assert [a["value"] for a in package["packageArguments"]] == ["stdio"]
    (remote,) = server["remotes"]
    assert remote["type"] == "streamable-http"
    assert remote["url"].endswith("/mcp")
    assert re.search(r"mcp-name: (\S+)", (ROOT / "README.md").read_text()).group(1) == server["name"]  # type: ignore[union-attr]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'pixazo-mcp = "app.cli:main"' in pyproject
