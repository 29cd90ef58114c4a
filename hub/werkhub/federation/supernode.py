"""A party's SuperNode: ``flower-supernode`` in the party user's sandbox, with its own
network namespace whose only way out is the relay to the SuperLink, the party's data
folder read-only at ``/data``, its ``out/`` writable and a scratch home (never the
person's own home)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkhub.errors import Conflict, Invalid
from werkhub.federation.commands import (
    NODE_DATA,
    NODE_KEYS,
    NODE_RELAY,
    NODE_RUNTIME_PORT,
    NODE_TLS,
    RELAY_SOCKET,
    relay_argv,
    supernode_argv,
)
from werkhub.federation.flower import base_env
from werkhub.federation.layout import PartyFolder
from werkhub.federation.pki import Pki
from werkhub.federation.process import Launch, Managed, chown_tree, spawn
from werkhub.federation.relay import Relay, tls_contexts
from werkhub.federation.superlink import RELAY_SCRIPT, free_port
from werkhub.gpus.devices import CPU_ONLY_ENV
from werkhub.sandbox.prepare import uid_of

#: the relay's port inside a SuperNode's own network namespace
INNER_LINK_PORT = 9092
_DEVICE = re.compile(r"^/dev/nvidia(\d+)$")


@dataclass
class Node:
    managed: Managed
    relay: Relay


def gpu_indexes(devices: tuple[str, ...]) -> tuple[int, ...]:
    found = []
    for device in devices:
        match = _DEVICE.match(device)
        if not match:
            raise Invalid(f"not a GPU device path: {device!r}", field="gpus")
        found.append(int(match.group(1)))
    return tuple(sorted(set(found)))


def socket_folder(runtime_dir: Path, federation_id: int, slug: str) -> Path:
    """A short folder of its own for the party's relay socket (bound at /werkhub/relay)."""
    digest = hashlib.sha256(slug.encode()).hexdigest()[:12]
    return runtime_dir / f"{int(federation_id)}-{digest}"


async def start_node(
    settings: Mapping[str, Any],
    flower_bin: Path,
    *,
    user: str,
    slug: str,
    party: PartyFolder,
    ca_cert: Path,
    data_folder: Path,
    gpu_devices: tuple[str, ...],
    link: int | Path,
    relay_folder: Path,
    max_wait: int,
) -> Node:
    if not (party.keys / "node.key").is_file():
        raise Conflict(f"party {slug} is not registered with this federation")
    if not data_folder.is_dir():
        raise Invalid(f"the data folder of party {slug} does not exist", field="data_folder")
    sandboxed = bool(settings)
    uid = uid_of(settings, user) if sandboxed else None
    for folder in (party.out, party.home, relay_folder):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    chown_tree([party.keys, party.out, relay_folder], uid)
    pki = Pki(ca_cert.parent)
    tls = tls_contexts(pki.server_cert, pki.server_key, pki.ca_cert)
    relay = Relay(relay_folder / RELAY_SOCKET, link, tls)
    await relay.start(uid)
    python = str(flower_bin / "python")
    if sandboxed:
        inner = INNER_LINK_PORT
        node = supernode_argv(str(flower_bin), slug, inner, NODE_RUNTIME_PORT, max_wait=max_wait)
        command = relay_argv(python, str(RELAY_SCRIPT), inner, f"{NODE_RELAY}/{RELAY_SOCKET}", node)
    else:  # no sandbox: host ports, host paths
        inner = free_port()
        node = supernode_argv(
            str(flower_bin),
            slug,
            inner,
            free_port(),
            ca=str(ca_cert),
            key=str(party.keys / "node.key"),
            max_wait=max_wait,
        )
        node[node.index("--node-config") + 1] = f'data-dir="{data_folder}" party="{slug}"'
        command = relay_argv(python, str(RELAY_SCRIPT), inner, str(relay.socket_path), node)
    devices = gpu_indexes(gpu_devices)
    env = {
        **base_env(flower_bin),
        "FLWR_HOME": str(party.home / "flwr"),
        "WERKHUB_PARTY_OUT": str(party.out),
        "WERKHUB_PARTY": slug,
        **(
            CPU_ONLY_ENV
            if not devices
            else {
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                "CUDA_VISIBLE_DEVICES": ",".join(map(str, devices)),
            }
        ),
    }
    launch = Launch(
        user=user,
        command=command,
        home=party.home,
        env=env,
        label="supernode",
        log=party.log,
        writable=[party.out],
        read_only_at=[
            (data_folder, NODE_DATA),
            (ca_cert, f"{NODE_TLS}/ca.pem"),
            (party.keys, NODE_KEYS),
        ]
        if sandboxed
        else [],
        writable_at=[(relay_folder, NODE_RELAY)] if sandboxed else [],
        unshare_net=sandboxed,
        gpu_indexes=devices,
    )
    try:
        managed = await spawn(settings, launch)
    except BaseException:
        await relay.close()
        raise
    return Node(managed, relay)
