"""hub/helm/values.yaml for the Zero to JupyterHub chart: valid against the chart's own
values schema (``../shared/data/z2jh``: chart 4.4.0 and the development line, merged onto
the chart's defaults the way Helm coalesces them before it validates), and the keys werkhub
depends on."""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from traitlets.config import Config

from werkhub.app.configurer import SPAWNER_DIGEST_VAR
from werkhub.config.load import parse_config

ROOT = Path(__file__).resolve().parents[2]
VALUES: dict[str, Any] = yaml.safe_load((ROOT / "hub" / "helm" / "values.yaml").read_text())

SERVICE_PORTS = {"werkhub": 10101, "mlflow": 10102}


#: the chart's values schema and defaults, kept beside the repository (no Helm here); CI
#: has them beside its clone, so there a missing copy fails instead of skipping
CHART = ROOT.parent / "shared" / "data" / "z2jh"
needs_chart = pytest.mark.skipif(
    not (CHART / "values.schema.yaml").is_file() and not os.environ.get("CI"),
    reason=f"the chart's schema is not at {CHART}",
)


def coalesce(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file onto the chart's defaults: maps merge key by key,
    other values replace, ``null`` removes the key."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def chart_errors(values: dict[str, Any], schema_file: str = "values.schema.yaml") -> list[str]:
    schema = yaml.safe_load((CHART / schema_file).read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator = jsonschema.Draft7Validator(schema)
    merged = coalesce(defaults, values)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)
    ]


#: sha256 of the chart's values.schema.yaml and values.yaml at its release tag 4.4.0
CHART_4_4_0 = {
    "values.schema.yaml": "1d9d48ee343efda1140edfc3de4d8ec4113ae9173bf9e44b83f19c2ca335a0dc",
    "values.yaml": "d61742ce43e33262bb8fa0d68b6b9e7a7b229a3c7ce6d5a08cf97788c0ba796b",
}


@needs_chart
def test_the_chart_is_release_4_4_0() -> None:
    """What the values are checked against is exactly chart 4.4.0's schema and defaults."""
    for name, digest in CHART_4_4_0.items():
        assert hashlib.sha256((CHART / name).read_bytes()).hexdigest() == digest, name


@needs_chart
@pytest.mark.parametrize("schema_file", ["values.schema.yaml", "values.schema.main.yaml"])
def test_values_are_valid_for_the_chart(schema_file: str) -> None:
    assert chart_errors(VALUES, schema_file) == []


@needs_chart
def test_the_chart_schema_catches_mistakes() -> None:
    """The check is live: a misspelt key or a wrong type in werkhub's values is an error."""
    typo = coalesce(VALUES, {"singleuser": {"memroy": {"limit": "8G"}}})
    assert any("memroy" in e for e in chart_errors(typo))
    wrong = coalesce(VALUES, {"cull": {"timeout": "one hour"}})
    assert any(e.startswith("cull.timeout") for e in chart_errors(wrong))


def rule_ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule["ports"]}


def test_spawner_and_authenticator_classes_exist() -> None:
    hub_config = VALUES["hub"]["config"]
    for dotted in (
        hub_config["JupyterHub"]["spawner_class"],
        hub_config["JupyterHub"]["authenticator_class"],
    ):
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted
    assert hub_config["JupyterHub"]["spawner_class"] == "werkhub.spawners.kube.WerkhubKubeSpawner"


def test_gpu_settings_are_spawner_traits() -> None:
    from werkhub.spawners.kube import WerkhubKubeSpawner

    for trait in VALUES["hub"]["config"]["WerkhubKubeSpawner"]:
        assert WerkhubKubeSpawner.class_traits(config=True).get(trait), trait


@pytest.mark.parametrize("name", ["werkhub", "mlflow"])
def test_services_are_reachable_through_the_hub_service(name: str) -> None:
    service = VALUES["hub"]["services"][name]
    port = SERVICE_PORTS[name]
    assert service["url"] == f"http://hub:{port}"
    command = service["command"]
    # listens on the pod's address, on the port the hub Service forwards
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == str(port)
    extra_ports = VALUES["hub"]["service"]["extraPorts"]
    assert {"name": name, "port": port, "targetPort": port} in extra_ports
    # the proxy may forward to it, and may leave its own pod for it
    assert port in rule_ports(VALUES["hub"]["networkPolicy"]["ingress"])
    assert port in rule_ports(VALUES["proxy"]["chp"]["networkPolicy"]["egress"])


def test_werkhub_service_command_and_mlflow_prefix() -> None:
    services = VALUES["hub"]["services"]
    command = services["werkhub"]["command"]
    assert command[:3] == ["python3", "-m", "uvicorn"]
    assert "werkhub.service.app:create_app" in command and "--factory" in command
    gateway = services["mlflow"]["command"]
    assert "werkhub.tracking.gateway:create_app" in gateway and "--factory" in gateway
    # the private MLflow server behind the gateway: per-user permissions, loopback only
    mlflow = json.loads(services["mlflow"]["environment"]["WERKHUB_MLFLOW_SERVER"])
    assert mlflow[mlflow.index("--app-name") + 1] == "basic-auth"
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1"
    assert mlflow[mlflow.index("--static-prefix") + 1] == "/services/mlflow"
    assert services["werkhub-spawner"] == {}  # token only


def test_roles() -> None:
    roles = VALUES["hub"]["loadRoles"]
    assert roles["werkhub-spawner"]["services"] == ["werkhub-spawner"]
    assert roles["werkhub-spawner"]["scopes"] == ["access:services!service=werkhub"]
    assert roles["werkhub-service"]["services"] == ["werkhub"]
    assert "access:services!service=werkhub" in roles["user"]["scopes"]
    assert roles["werkhub-mlflow-gateway"]["services"] == ["mlflow"]
    assert "tokens" in roles["werkhub-service"]["scopes"]  # jobs act as their owner


def test_embedded_werkhub_yaml_is_valid() -> None:
    files = VALUES["hub"]["extraFiles"]["werkhub-config"]
    cfg = parse_config(files["data"])
    assert cfg.spawner.kind == "kubernetes"
    env = VALUES["hub"]["services"]["werkhub"]["environment"]
    assert env["WERKHUB_CONFIG"] == files["mountPath"]
    assert env["WERKHUB_SERVICE_PORT"] == str(cfg.services.werkhub.port)


def test_extra_config_wires_the_spawner_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs the chart's extraConfig as the chart's hub does after building the services
    from the values (the chart's ``z2jh`` helper module reads mounted secrets; here it
    answers from a dict)."""
    secrets = {"hub.services.werkhub-spawner.apiToken": "a" * 64}
    z2jh = types.ModuleType("z2jh")
    z2jh.get_secret_value = secrets.__getitem__  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "z2jh", z2jh)
    c = Config()
    c.JupyterHub.services = [
        {"name": name, **{k: v for k, v in spec.items() if k != "apiToken"}}
        for name, spec in VALUES["hub"]["services"].items()
    ]
    c.KubeSpawner.environment = {}
    for name, source in VALUES["hub"]["extraConfig"].items():
        exec(compile(source, name, "exec"), {"c": c})
    assert c.Spawner.werkhub_token == "a" * 64
    assert "MLFLOW_TRACKING_TOKEN" in c.KubeSpawner.environment
    (werkhub,) = [s for s in c.JupyterHub.services if s["name"] == "werkhub"]
    digest = werkhub["environment"][SPAWNER_DIGEST_VAR]
    assert digest == hashlib.sha256(b"a" * 64).hexdigest()


@pytest.mark.parametrize(
    "policy",
    [
        ("singleuser", "networkPolicy"),
        ("hub", "networkPolicy"),
        ("proxy", "chp", "networkPolicy"),
    ],
)
def test_no_internet_egress(policy: tuple[str, ...]) -> None:
    netpol: Any = VALUES
    for key in policy:
        netpol = netpol[key]
    assert netpol["enabled"] is True
    rules = netpol["egressAllowRules"]
    assert rules["nonPrivateIPs"] is False
    assert rules["cloudMetadataServer"] is False
    assert rules["dnsPortsCloudMetadataServer"] is False
    for rule in netpol.get("egress") or []:
        for peer in rule["to"]:
            assert "ipBlock" not in peer, "egress to addresses, not to pods"


def test_user_pods_reach_only_hub_proxy_and_dns() -> None:
    netpol = VALUES["singleuser"]["networkPolicy"]
    assert netpol["egressAllowRules"] == {
        "cloudMetadataServer": False,
        "dnsPortsCloudMetadataServer": False,
        "dnsPortsKubeSystemNamespace": True,
        "dnsPortsPrivateIPs": True,
        "nonPrivateIPs": False,
        "privateIPs": False,
    }
    assert netpol["egress"] == []
    su = VALUES["singleuser"]
    assert su["extraLabels"]["hub.jupyter.org/network-access-proxy-http"] == "true"
    assert su["extraEnv"]["WERKHUB_SERVICE_URL"] == "http://proxy-public/services/werkhub/"


def test_user_pods_run_unprivileged_from_the_curated_image() -> None:
    su = VALUES["singleuser"]
    assert su["uid"] == 1000 and su["allowPrivilegeEscalation"] is False
    assert su["image"]["name"].endswith("/werkhub/pytorch")
    # images name their registry: a bare name would be pulled from Docker Hub
    for image in (su["image"]["name"], VALUES["hub"]["image"]["name"]):
        assert "." in image.split("/")[0], image
