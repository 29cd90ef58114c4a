"""Flower's Control API (register SuperNode keys, start, list and stop runs) takes anyone
who reaches the SuperLink's port with TLS: the sandboxed SuperLink has a network namespace
of its own, and the host's control port is werkhub's relay that admits only the
federation owner's uid and werkhub's own (real SuperLink, real processes of other uids)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.federation.runtime_world import (
    FLOWER_BIN,
    OWNER,
    UID_BASE,
    RuntimeWorld,
    can_run,
    runtime_world,
)
from werkhub.federation.commands import CONNECTION, LINK_INNER_PORT, connection_toml
from werkhub.federation.pki import make_node_keys
from werkhub.sandbox.prepare import uid_of

pytestmark = pytest.mark.skipif(bool(can_run()), reason=can_run() or "runs")

#: a uid nobody of the test has (neither the owner's nor werkhub's)
STRANGER = UID_BASE + 39
#: a client that opens TLS to the control port as whoever runs it
CLIENT = """
import json, socket, ssl, sys
port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"POST /v1/control/list-nodes HTTP/1.1\\r\\nhost: x\\r\\n"
                        b"content-type: application/protobuf\\r\\ncontent-length: 0\\r\\n\\r\\n")
            print(json.dumps({"answer": tls.recv(200).decode(errors="replace")}))
except (OSError, ssl.SSLError) as error:
    print(json.dumps({"error": type(error).__name__}))
"""


async def as_uid(uid: int, argv: list[str], home: Path) -> tuple[int, str]:
    """Run ``argv`` under ``uid`` (setpriv): exit status and output."""
    env = {
        "PATH": f"{FLOWER_BIN}:/usr/bin:/bin",
        "HOME": str(home),
        "FLWR_HOME": str(home),
        "NO_COLOR": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
    }
    setpriv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    proc = await asyncio.create_subprocess_exec(
        *setpriv,
        *argv,
        env=env,
        cwd=str(home),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(errors="replace")


def flwr_home(w: RuntimeWorld, uid: int, name: str, address: str) -> Path:
    """A FLWR_HOME of ``uid``'s with the issued connection (config.toml and ca.pem) and a
    fresh SuperNode public key."""
    home = w.base / name
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(connection_toml(address, str(home / "ca.pem")))
    shutil.copy(w.plan.folder / "pki" / "ca.pem", home / "ca.pem")
    make_node_keys(home / "keys", name)
    for root, dirs, files in os.walk(home):
        for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(entry, uid, uid)
    return home


def host_listeners(uid: int) -> list[str]:
    """Listening TCP sockets in the host's network namespace made by ``uid``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[7]) == uid:
                found.append(fields[1])
    return found


async def test_the_control_port_admits_only_the_owner_and_werkhub() -> None:
    """A process of another uid that connects to the federation's control port is cut off
    at once (no TLS, no node list, no key registered); the owner's own `flwr` with the
    issued configuration lists the nodes; the SuperLink itself listens on no host port."""
    async with runtime_world() as w:
        info = await w.runtime.ensure_link(w.plan)
        port = int(info.address.rsplit(":", 1)[1])
        owner_uid = uid_of(w.settings, OWNER)
        assert STRANGER not in (owner_uid, os.geteuid())
        node_id = await w.runtime.register(w.plan, w.party("acme"))
        before = await w.nodes()
        flwr = str(FLOWER_BIN / "flwr")
        stranger = flwr_home(w, STRANGER, "stranger", info.address)
        owner = flwr_home(w, owner_uid, "owner", info.address)
        # a stranger's raw TLS client: closed before the handshake
        script = stranger / "client.py"
        script.write_text(CLIENT)
        os.chown(script, STRANGER, STRANGER)
        python = [sys.executable, str(script), str(port), str(stranger / "ca.pem")]
        code, out = await as_uid(STRANGER, python, stranger)
        answer = json.loads(out)
        assert code == 0 and answer.get("error", "").startswith(("SSL", "Connection")), out
        # ... and the flwr CLI: neither the node list nor a key registration
        code, out = await as_uid(
            STRANGER, [flwr, "supernode", "list", CONNECTION, "--format", "json"], stranger
        )
        assert '"success": false' in out and "unavailable" in out and node_id not in out, out
        key = str(stranger / "keys" / "node.pub")
        code, out = await as_uid(
            STRANGER, [flwr, "supernode", "register", key, CONNECTION, "--format", "json"], stranger
        )
        assert '"success": false' in out and "unavailable" in out, out
        assert await w.nodes() == before
        link = w.runtime._links[1].started.control
        assert link is not None and link.refused >= 3
        # the owner's flwr with the issued configuration
        code, out = await as_uid(
            owner_uid, [flwr, "supernode", "list", CONNECTION, "--format", "json"], owner
        )
        assert code == 0 and node_id in out, out
        code, out = await as_uid(owner_uid, [flwr, "ls", CONNECTION, "--format", "json"], owner)
        assert code == 0 and '"success": true' in out, out
        # werkhub's own calls pass too
        assert node_id in await w.nodes()
        # the SuperLink's own port is in its own network namespace only
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", LINK_INNER_PORT), timeout=5).close()
        assert not host_listeners(owner_uid)
