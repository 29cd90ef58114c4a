"""The endpoint store on SQLite and PostgreSQL: visibility, tokens kept as digests, the
gateway's token check (revoked, expired, another endpoint's), request logs capped at 100."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from werkhub.db import make_engines, upgrade
from werkhub.errors import Conflict, NotFound, TooMany
from werkhub.serving.gateway import Gateway, Refused
from werkhub.serving.store import EndpointStore, Viewer, digest

SETTINGS = {
    "resources": {"cpu": 1.0, "memory": "2G", "gpu": None},
    "min_replicas": 1,
    "idle_minutes": 30,
    "request_logging": True,
}


@pytest.fixture
def store(db_url: str) -> EndpointStore:
    upgrade(db_url)
    writer, reader = make_engines(db_url)
    return EndpointStore(writer, reader)


def row(owner: str, name: str, groups: list[str] | None = None) -> dict[str, Any]:
    return {
        "owner": owner,
        "name": name,
        "model": f"{owner}~m",
        "alias": "champion",
        "version": None,
        "serving_version": None,
        "settings": SETTINGS,
        "groups": groups or [],
        "state": "starting",
    }


def test_visibility_and_limits(store: EndpointStore) -> None:
    created = store.create(row("ann", "press", ["qa"]), max_per_owner=2)
    with pytest.raises(Conflict, match="already have an endpoint named 'press'"):
        store.create(row("ann", "press"), max_per_owner=2)
    store.create(row("ann", "drill"), max_per_owner=2)
    with pytest.raises(TooMany):
        store.create(row("ann", "third"), max_per_owner=2)
    assert store.visible(Viewer("ben", groups=("qa",)), "ann", "press")["id"] == created["id"]
    with pytest.raises(NotFound):
        store.visible(Viewer("cy"), "ann", "press")
    with pytest.raises(NotFound):  # a group member calls, but does not manage
        store.managed(Viewer("ben", groups=("qa",)), "ann", "press")
    assert store.managed(Viewer("root", admin=True), "ann", "press")
    assert [r["name"] for r in store.listing(Viewer("ben", groups=("qa",)))] == ["press"]
    assert len(store.listing(Viewer("root", admin=True))) == 2


def gateway(store: EndpointStore) -> Gateway:
    supervisor: Any = SimpleNamespace(cfg=SimpleNamespace(request_timeout_seconds=60))
    return Gateway("/endpoints/", supervisor, store, auth=None, max_bytes=1024)


def test_tokens_are_digests_and_the_gateway_checks_them(store: EndpointStore) -> None:
    press = store.create(row("ann", "press"), max_per_owner=5)
    drill = store.create(row("ann", "drill"), max_per_owner=5)
    token_row, token = store.add_token(press["id"], "line 3", None)
    assert token.startswith(f"wep_{token_row['id']}_")
    kept = store.tokens(press["id"])[0]
    assert kept["digest"] == digest(token) and token not in str(kept)
    gate = gateway(store)
    check = gate.check_endpoint_token
    assert asyncio.run(check(token_row["id"], token)) == press["id"]
    assert drill["id"] != press["id"]
    # a forged secret with a real id
    with pytest.raises(Refused) as info:
        asyncio.run(check(token_row["id"], f"wep_{token_row['id']}_forged"))
    assert info.value.status == 401
    # revoked: refused at once, although the check was cached
    store.revoke(press["id"], token_row["id"])
    gate.forget_token(token_row["id"])
    with pytest.raises(Refused, match="revoked"):
        asyncio.run(check(token_row["id"], token))
    # expired
    old_row, old = store.add_token(press["id"], "old", time.time() - 1)
    with pytest.raises(Refused, match="expired"):
        asyncio.run(check(old_row["id"], old))
    with pytest.raises(NotFound):
        store.revoke(drill["id"], old_row["id"])  # not that endpoint's token


def test_request_logs_keep_the_last_hundred(store: EndpointStore) -> None:
    press = store.create(row("ann", "press"), max_per_owner=5)
    entry = {
        "caller": "ann",
        "status": 200,
        "latency_ms": 1.0,
        "version": "1",
        "response": "{}",
    }
    for batch in range(3):
        store.add_logs(
            press["id"], [{**entry, "at": float(i), "request": f"{batch}-{i}"} for i in range(60)]
        )
    logs = store.logs(press["id"])
    assert len(logs) == 100 and logs[0]["request"] == "2-59"
    store.remove(press["id"])
    assert store.logs(press["id"]) == [] and store.tokens(press["id"]) == []
