"""The TLS setups we ship (compose with its Caddy profile, the Kubernetes manifests) send the gallery
cookie over https only and sign it with a fixed secret taken from a secret (issue 11, point 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(("file", "service_name"), [("compose.yaml", "pixazo-mcp"),
                                                   ("compose.replicas.yaml", "pixazo-1")])
def test_compose_sets_secure_cookies_and_reads_the_session_secret_from_a_secret(file: str, service_name: str) -> None:
    compose = load(DEPLOY / file)
    service = compose["services"][service_name]
    assert service["environment"]["PIXAZO_SECURE_COOKIES"] == "true"
    assert "PIXAZO_SESSION_SECRET" not in service["environment"]  # a secret, not plain configuration
    targets = {s["target"]: s["source"] for s in service["secrets"]}
    source = targets["PIXAZO_SESSION_SECRET"]
    assert compose["secrets"][source]["file"].startswith("./secrets/")
    assert service["environment"]["PIXAZO_SECRETS_DIR"] == "/run/secrets"
    assert source in (DEPLOY / "secrets" / "README.md").read_text()
    assert "caddy" in compose["services"]


@pytest.mark.parametrize("directory", ["k8s", "k8s-replicas"])
def test_kubernetes_sets_secure_cookies_and_mounts_the_session_secret(directory: str) -> None:
    config = load(DEPLOY / directory / "configmap.yaml")["data"]
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((DEPLOY / directory / "secret.yaml").read_text())}
    deployment = load(DEPLOY / directory / "deployment.yaml")
    assert config["PIXAZO_SECURE_COOKIES"] == "true"
    assert "PIXAZO_SESSION_SECRET" not in config
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    volume = volumes["secrets"]
    names = ([volume["secret"]["secretName"]] if "secret" in volume
             else [source["secret"]["name"] for source in volume["projected"]["sources"]])
    assert any(secrets[name]["stringData"].get("PIXAZO_SESSION_SECRET") for name in names)
    assert config["PIXAZO_SECRETS_DIR"] == "/run/secrets"
