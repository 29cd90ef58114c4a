from __future__ import annotations

from pathlib import Path

import pytest

from werkhub.config.load import ConfigError, load_config, parse_config
from werkhub.config.schema import WerkhubConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "hub" / "werkhub.example.yaml"


def problems(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_defaults_are_the_embedded_default() -> None:
    cfg = parse_config(None)
    assert cfg.hub.public_url == "http://127.0.0.1:8000"
    assert cfg.database.url == ""
    assert cfg.spawner.kind == "local"
    assert cfg.auth.kind == "native"
    assert cfg.services.mlflow.enabled


def test_example_file_is_valid_and_documents_every_option() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg == WerkhubConfig()  # the example shows the defaults
    text = EXAMPLE.read_text()

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():
            assert f"{name}:" in text, f"{prefix}{name} is not in the example file"
            sub = field.annotation
            for candidate in getattr(sub, "__args__", None) or (sub,):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    walk(candidate, f"{prefix}{name}.")

    walk(WerkhubConfig, "")


def test_unknown_key_names_path_and_allowed_keys() -> None:
    (msg,) = problems({"hub": {"pubic_url": "http://x:1"}})
    assert msg.startswith("hub.pubic_url: unknown key")
    assert "public_url" in msg


def test_wrong_type_and_impossible_values() -> None:
    msgs = problems(
        {
            "hub": {"hub_port": "eighty", "concurrent_spawn_limit": 0},
            "spawner": {"kind": "podman", "mem_limit": "lots"},
            "services": {"mlflow": {"port": 70000}},
        }
    )
    joined = "\n".join(msgs)
    assert "hub.hub_port: Input should be a valid integer" in joined
    assert "hub.concurrent_spawn_limit: Input should be greater than or equal to 1" in joined
    assert (
        "spawner.kind: Input should be 'local', 'docker', 'kubernetes' or 'slurm' (got 'podman')"
        in joined
    )
    assert "spawner.mem_limit: must be a size like" in joined
    assert "services.mlflow.port: Input should be less than or equal to 65535" in joined


def test_port_clash_is_reported() -> None:
    (msg,) = problems({"hub": {"hub_port": 8000}})
    assert "hub.hub_port uses port 8000, already taken by hub.public_url" in msg


def test_public_url_must_be_http_without_path() -> None:
    assert "must be an http://" in problems({"hub": {"public_url": "ftp://host"}})[0]
    assert "must not contain a path" in problems({"hub": {"public_url": "http://h:1/x"}})[0]


def test_oidc_needs_its_section_and_client() -> None:
    assert "needs an 'oidc' section" in problems({"auth": {"kind": "oidc"}})[0]
    msg = problems({"auth": {"kind": "oidc", "oidc": {"allowed_groups": ["a"]}}})[0]
    assert "issuer is required" in msg


def test_top_level_must_be_mapping_and_yaml_errors_have_lines(tmp_path: Path) -> None:
    assert "must be a mapping" in problems(["a"])[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("hub:\n  public_url: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "line" in info.value.problems[0] and "not valid YAML" in info.value.problems[0]
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
