"""Pure rules of model endpoints: what a request may say, patches, scale to zero,
back-off and per-minute figures."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from werkhub.serving import spec


def make(**fields: object) -> spec.EndpointCreate:
    return spec.EndpointCreate.model_validate({"name": "press-3", "model": "ann~m", **fields})


def test_defaults_follow_the_champion_alias() -> None:
    created = make()
    assert created.alias == "champion" and created.version is None
    assert created.min_replicas == 1 and created.resources.gpu is None


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"name": "Press"}, "pattern"),
        ({"name": "-press"}, "pattern"),
        ({"name": "a" * 41}, "at most 40"),
        ({"model": "ann/m"}, "no registered model name"),
        ({"alias": "champion", "version": "2"}, "either alias or version"),
        ({"version": "0"}, "no model version"),
        ({"alias": "v3"}, "reserves aliases"),
        ({"alias": "has space"}, "no MLflow alias"),
        ({"resources": {"memory": "12 bananas"}}, "no memory size"),
        ({"resources": {"memory": "64M"}}, "at least 128M"),
        ({"resources": {"cpu": 0}}, "greater than or equal"),
        ({"resources": {"gpu": {"type": "L4", "count": 0}}}, "greater than or equal"),
        ({"min_replicas": 2}, "0 or 1"),
        ({"idle_minutes": 0}, "greater than or equal"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bad_requests_say_what_is_wrong(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(**fields)
    assert words in str(info.value)


def test_memory_sizes() -> None:
    assert spec.memory_bytes("512M") == 512 * 1024**2
    assert spec.memory_bytes("2G") == 2 * 1024**3
    assert spec.memory_bytes("1.5Gi") == int(1.5 * 1024**3)


def current() -> dict[str, object]:
    return {
        "model": "ann~m",
        "alias": "champion",
        "version": None,
        "groups": ["qa"],
        "settings": {
            "resources": {"cpu": 1.0, "memory": "2G", "gpu": None},
            "min_replicas": 1,
            "idle_minutes": 30,
            "request_logging": False,
        },
    }


def test_a_version_patch_pins_and_rolls_out() -> None:
    new, moved = spec.patched(current(), spec.EndpointPatch(version="4"))
    assert moved and new["version"] == "4" and new["alias"] is None


def test_a_settings_patch_does_not_roll_out() -> None:
    new, moved = spec.patched(current(), spec.EndpointPatch(min_replicas=0, groups=["b", "a"]))
    assert not moved
    assert new["settings"]["min_replicas"] == 0 and new["groups"] == ["a", "b"]  # type: ignore[index]


def test_an_empty_patch_is_refused() -> None:
    with pytest.raises(ValidationError, match="nothing to change"):
        spec.EndpointPatch()


def test_scale_to_zero_only_when_allowed_idle_and_quiet() -> None:
    assert spec.scale_to_zero(0, 1, last_request=0, now=60, inflight=0)
    assert not spec.scale_to_zero(0, 1, last_request=0, now=59, inflight=0)
    assert not spec.scale_to_zero(0, 1, last_request=0, now=600, inflight=1)
    assert not spec.scale_to_zero(1, 1, last_request=0, now=600, inflight=0)


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [spec.backoff(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert spec.backoff(30) == 300


def test_minute_figures() -> None:
    figures = spec.summarise(100, [float(v) for v in range(1, 101)], 2, "3")
    assert figures == {
        "minute": 100,
        "requests": 100,
        "errors": 2,
        "p50_ms": 50.0,
        "p99_ms": 99.0,
        "version": "3",
    }
    assert spec.percentile([], 0.5) == 0.0


def test_logged_text_is_cut_with_a_mark() -> None:
    assert spec.clip("abc", 5) == "abc"
    assert spec.clip("a" * 10, 4) == "aaaa... [6 more characters not kept]"
