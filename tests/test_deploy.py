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


def shipped_secrets(path: str) -> dict[str, str]:
    documents = list(yaml.safe_load_all((DEPLOY / path).read_text()))
    return {k: v for doc in documents for k, v in doc["stringData"].items()}


@pytest.mark.parametrize("path", ["k8s/secret.yaml", "k8s-replicas/secret.yaml"])
def test_the_shipped_placeholder_secrets_cannot_start_a_server(path: str, tmp_path: Path) -> None:
    """Issue 19: the manifests ship REPLACE_WITH_... values; a server given them as they are stops at once."""
    from pydantic import SecretStr

    from app.identity.tokens import ConfigError
    from app.web.app import create_app
    from tests.conftest import SESSION_SECRET, make_settings

    shipped = shipped_secrets(path)
    as_shipped = make_settings(tmp_path, session_secret=SecretStr(shipped["PIXAZO_SESSION_SECRET"]))
    with pytest.raises(ConfigError, match="PIXAZO_SESSION_SECRET looks like a placeholder"):
        create_app(as_shipped)
    tokens_as_shipped = make_settings(tmp_path, session_secret=SecretStr(SESSION_SECRET),
                                      auth_tokens=SecretStr(shipped["PIXAZO_AUTH_TOKENS"]))
    with pytest.raises(ConfigError, match="looks like a placeholder"):
        create_app(tokens_as_shipped)
    configmap = load(DEPLOY / path.replace("secret", "configmap"))
    operators = configmap["data"]["PIXAZO_OPERATORS"].split(",")
    assert {entry.split(":")[0] for entry in shipped["PIXAZO_AUTH_TOKENS"].split(",")} >= set(operators)


def test_prometheus_scrapes_metrics_with_an_operators_token_from_a_file() -> None:
    (job,) = load(DEPLOY / "prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    assert job["authorization"]["credentials_file"].startswith("/etc/prometheus/secrets/")
    assert "PIXAZO_OPERATORS" in (DEPLOY / "prometheus.yml").read_text()
