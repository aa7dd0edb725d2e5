"""The TLS setups we ship (compose with its Caddy profile, the Kubernetes manifests) send the gallery
cookie over https only and sign it with a fixed secret taken from a secret (issue 11, point 14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_compose_sets_secure_cookies_and_reads_the_session_secret_from_a_secret() -> None:
    compose = load(DEPLOY / "compose.yaml")
    service = compose["services"]["pixazo-mcp"]
    assert service["environment"]["PIXAZO_SECURE_COOKIES"] == "true"
    assert "PIXAZO_SESSION_SECRET" not in service["environment"]  # a secret, not plain configuration
    targets = {s["target"]: s["source"] for s in service["secrets"]}
    source = targets["PIXAZO_SESSION_SECRET"]
    assert compose["secrets"][source]["file"].startswith("./secrets/")
    assert service["environment"]["PIXAZO_SECRETS_DIR"] == "/run/secrets"
    assert source in (DEPLOY / "secrets" / "README.md").read_text()
    assert "tls" in compose["services"]["caddy"]["profiles"]


def test_kubernetes_sets_secure_cookies_and_mounts_the_session_secret() -> None:
    config = load(DEPLOY / "k8s" / "configmap.yaml")["data"]
    secret = load(DEPLOY / "k8s" / "secret.yaml")
    deployment = load(DEPLOY / "k8s" / "deployment.yaml")
    assert config["PIXAZO_SECURE_COOKIES"] == "true"
    assert "PIXAZO_SESSION_SECRET" not in config
    assert secret["stringData"]["PIXAZO_SESSION_SECRET"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert config["PIXAZO_SECRETS_DIR"] == "/run/secrets"
