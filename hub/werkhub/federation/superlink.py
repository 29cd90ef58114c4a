"""A federation's SuperLink: a sandboxed ``flower-superlink`` in its owner's sandbox on
``127.0.0.1:<port>``, TLS from the federation's CA, SuperNode authentication on, its state
in ``link/superlink.db`` (so registrations survive restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from werkhub.errors import Unavailable
from werkhub.federation.commands import LINK_TLS, superlink_argv
from werkhub.federation.flower import base_env, write_connection
from werkhub.federation.layout import FederationFolder
from werkhub.federation.pki import Pki, make_ca
from werkhub.federation.process import Launch, Managed, chown_tree, spawn, stop, tail
from werkhub.sandbox.prepare import uid_of


class LinkError(Unavailable):
    """A SuperLink did not start (the message quotes the end of its log)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``127.0.0.1:port`` (as uvicorn does: connections of
    the last SuperLink lingering in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(folder: FederationFolder) -> int:
    """The port the SuperLink listened on before, when still free (the owner's flwr
    configuration stays valid), else a free one; kept in ``link/port``."""
    with contextlib.suppress(OSError, ValueError):
        port = int(folder.port_file.read_text().strip())
        if 1024 < port < 65536 and port_is_free(port):
            return port
    port = free_port()
    folder.port_file.write_text(f"{port}\n")
    return port


async def listening(port: int, managed: Managed, timeout: float) -> bool:
    """Whether ``127.0.0.1:port`` accepts within ``timeout`` while the process lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and managed.alive:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.3)
            continue
        writer.close()
        return True
    return False


async def start_link(
    settings: Mapping[str, Any],
    flower_bin: Path,
    owner: str,
    folder: FederationFolder,
    name: str,
    timeout: float,
) -> tuple[Managed, int]:
    """Make the CA once, start the SuperLink, wait until it listens: (process, port)."""
    pki = Pki(folder.pki)
    folder.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    await asyncio.to_thread(make_ca, pki, name)
    folder.link.mkdir(mode=0o700, exist_ok=True)
    folder.runs.mkdir(mode=0o700, exist_ok=True)
    uid = uid_of(settings, owner) if settings else None
    # the owner's sandbox reads the SuperLink's certificate and key, writes its home and runs
    chown_tree([pki.link, folder.link, folder.runs], uid)
    port = choose_port(folder)
    sandboxed = bool(settings)
    tls = LINK_TLS if sandboxed else str(pki.link)
    argv = superlink_argv(str(flower_bin), port, str(folder.database), tls)
    env = {
        **base_env(flower_bin),
        "FLWR_HOME": str(folder.link / "flwr"),
        "WERKHUB_FEDERATION_OUT": str(folder.runs),
    }
    launch = Launch(
        user=owner,
        command=argv,
        home=folder.link,
        env=env,
        label="superlink",
        log=folder.link_log,
        writable=[folder.runs],
        read_only_at=[(pki.link, LINK_TLS)] if sandboxed else [],
    )
    managed = await spawn(settings, launch)
    if not await listening(port, managed, timeout):
        await stop(managed, grace=5)
        raise LinkError(
            f"the SuperLink of federation {name} did not listen on 127.0.0.1:{port} within "
            f"{timeout:g} s; its log ends with:\n{tail(folder.link_log)}"
        )
    write_connection(folder.flwr_home, f"127.0.0.1:{port}", pki.ca_cert)
    return managed, port
