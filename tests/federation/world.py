"""Organisations, admins and members for the federation tests on a real werkhub: an
owner organisation, three invited ones and a stranger, each with an admin and a member."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.hub import Werkhub

API = "/services/werkhub/api"
FED = f"{API}/federations"
#: organisation -> (admin, member)
ORGS = {
    "fedacme": ("fa-ann", "fa-al"),
    "fedbeta": ("fb-bob", "fb-bea"),
    "fedgamma": ("fg-gil", "fg-gus"),
    "feddelta": ("fd-dan", "fd-dora"),
}


def ok(reply: httpx.Response, *codes: int) -> Any:
    assert reply.status_code in (codes or (200, 201)), reply.text
    return reply.json() if reply.content else {}


@dataclass
class World:
    hub: Werkhub
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, user: str) -> httpx.Client:
        return self.hub.client(self.tokens[user])

    def home(self, user: str) -> Path:
        path = self.hub.state / "homes" / user
        path.mkdir(parents=True, exist_ok=True)
        return path

    def data_folder(self, user: str, name: str = "fed-data") -> str:
        (self.home(user) / name).mkdir(parents=True, exist_ok=True)
        return name


def make_world(hub: Werkhub) -> World:
    world = World(hub)
    for admin, member in ORGS.values():
        for name in (admin, member):
            world.tokens[name] = hub.create_user(name)
    world.tokens["fx-lone"] = hub.create_user("fx-lone")  # in no organisation
    with hub.admin() as api:
        for slug, (admin, member) in ORGS.items():
            ok(api.post(f"{API}/orgs", json={"slug": slug, "name": slug.upper()}))
            ok(api.put(f"{API}/orgs/{slug}/members/{admin}", json={"admin": True}))
            ok(api.put(f"{API}/orgs/{slug}/members/{member}", json={"admin": False}))
    return world
