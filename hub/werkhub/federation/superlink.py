"""A federation's SuperLink: a sandboxed ``flower-superlink`` in its owner's sandbox with a
network namespace of its own, reached through a unix socket (the parties' relays) and
werkhub's control relay on the host's ``127.0.0.1:<port>`` (the owner and werkhub only);
TLS from the federation's CA, SuperNode authentication on, its state in
``link/superlink.db`` (so registrations survive restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkhub.errors import Unavailable
from werkhub.federation.commands import (
    LINK_INNER_PORT,
    LINK_RELAY,
    LINK_TLS,
    RELAY_SOCKET,
    link_relay_argv,
    superlink_argv,
)
from werkhub.federation.control import ControlRelay, werkhub_uid
from werkhub.federation.flower import base_env, write_connection
from werkhub.federation.layout import FederationFolder
from werkhub.federation.pki import Pki, make_ca
from werkhub.federation.process import Launch, Managed, chown_tree, spawn, stop, tail
from werkhub.sandbox.prepare import uid_of

RELAY_SCRIPT = Path(__file__).with_name("relay_inside.py")


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


async def listening(port: int, managed: Managed, timeout: float, ca: Path | None = None) -> bool:
    """Whether ``127.0.0.1:port`` accepts (and, with the federation's ``ca``, completes a
    TLS handshake: through a relay that accepts at once, the SuperLink answers) within
    ``timeout`` while the process lives."""
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and managed.alive:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=context,
                    server_hostname="127.0.0.1" if context else None,
                ),
                5,
            )
        except (OSError, ssl.SSLError, TimeoutError):
            await asyncio.sleep(0.3)
            continue
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return True
    return False


@dataclass
class StartedLink:
    managed: Managed
    port: int  # the host's 127.0.0.1:port (the control relay's, or the SuperLink's own)
    #: sandboxed: the unix socket to the SuperLink (what the parties' relays use) and the
    #: control relay on ``port`` (owner and werkhub only); no sandbox: None, None
    socket: Path | None = None
    control: ControlRelay | None = None

    async def stop(self, grace: float = 10.0) -> None:
        await stop(self.managed, grace=grace)
        if self.control is not None:
            await self.control.close()


async def start_link(
    settings: Mapping[str, Any],
    flower_bin: Path,
    owner: str,
    folder: FederationFolder,
    name: str,
    timeout: float,
    sockets: Path,
) -> StartedLink:
    """Make the CA once, start the SuperLink, wait until it answers TLS on the host's
    ``127.0.0.1:port``.

    Sandboxed, the SuperLink has a network namespace of its own: a launcher in its sandbox
    (``relay_inside.py --serve``) passes the unix socket ``sockets/link.sock`` on to the
    SuperLink's port there (:data:`LINK_INNER_PORT`), and werkhub's :class:`ControlRelay`
    on the host's port admits only the owner's and werkhub's uids. Without a sandbox the
    SuperLink listens on the host's port itself."""
    pki = Pki(folder.pki)
    folder.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    await asyncio.to_thread(make_ca, pki, name)
    folder.link.mkdir(mode=0o700, exist_ok=True)
    folder.runs.mkdir(mode=0o700, exist_ok=True)
    sandboxed = bool(settings)
    uid = uid_of(settings, owner) if sandboxed else None
    if sandboxed:
        shutil.rmtree(sockets, ignore_errors=True)
        sockets.mkdir(mode=0o700, parents=True)
    # the owner's sandbox reads the SuperLink's certificate and key, writes its home and runs
    chown_tree([pki.link, folder.link, folder.runs, *([sockets] if sandboxed else [])], uid)
    port = choose_port(folder)
    tls = LINK_TLS if sandboxed else str(pki.link)
    inner = LINK_INNER_PORT if sandboxed else port
    argv = superlink_argv(str(flower_bin), inner, str(folder.database), tls)
    if sandboxed:
        python, script = str(flower_bin / "python"), str(RELAY_SCRIPT)
        argv = link_relay_argv(python, script, f"{LINK_RELAY}/{RELAY_SOCKET}", inner, argv)
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
        writable_at=[(sockets, LINK_RELAY)] if sandboxed else [],
        unshare_net=sandboxed,
    )
    managed = await spawn(settings, launch)
    started = StartedLink(managed, port)
    if sandboxed and uid is not None:
        started.socket = sockets / RELAY_SOCKET
        started.control = ControlRelay(port, started.socket, {uid, werkhub_uid()}, name)
        try:
            await started.control.start()
        except OSError:
            await started.stop(grace=5)
            raise
    if not await listening(port, managed, timeout, pki.ca_cert):
        await started.stop(grace=5)
        raise LinkError(
            f"the SuperLink of federation {name} did not listen on 127.0.0.1:{port} within "
            f"{timeout:g} s; its log ends with:\n{tail(folder.link_log)}"
        )
    write_connection(folder.flwr_home, f"127.0.0.1:{port}", pki.ca_cert)
    return started
