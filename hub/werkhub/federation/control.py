"""The control relay of a sandboxed SuperLink: werkhub's listener on the host's
``127.0.0.1:<port>`` (the address in the owner's and werkhub's ``flwr`` configuration),
whose connections go on, bytes unchanged (TLS end to end), to the unix socket of the
SuperLink's sandbox, where the SuperLink listens on its own network namespace's loopback.

Flower 1.42's Control API (register SuperNode keys, start, list and stop runs, pull their
artifacts) asks for no credentials beyond TLS, so the relay admits a connection only from
the federation owner's uid or werkhub's own: the uid that made the connecting socket, from
``/proc/net/tcp`` (:func:`werkhub.federation.commands.socket_owner`). Any other is closed
at once and logged."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from werkhub.federation.commands import socket_owner
from werkhub.federation.streams import Connections, pump

log = logging.getLogger("werkhub.federation.control")
TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def peer_uid(peer: tuple[str, int], here: tuple[str, int]) -> int | None:
    """The uid of the process that opened the connection from ``peer`` to ``here`` (both
    in this network namespace), ``None`` when not found."""
    for table in TABLES:
        try:
            with open(table) as handle:
                text = handle.read()
        except OSError:
            continue
        uid = socket_owner(text, peer, here)
        if uid is not None:
            return uid
    return None


class ControlRelay:
    """``127.0.0.1:port`` -> the SuperLink sandbox's unix socket, for ``uids`` only."""

    def __init__(self, port: int, link_socket: Path, uids: Iterable[int], name: str) -> None:
        self.port = port
        self.link_socket = link_socket
        self.uids = frozenset(uids)
        self.name = name
        #: connections closed because of their uid
        self.refused = 0
        self._open = Connections()

    async def start(self) -> None:
        self._open.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _admitted(self, writer: asyncio.StreamWriter) -> bool:
        peer = writer.get_extra_info("peername")
        here = writer.get_extra_info("sockname")
        if not peer or not here:
            return False
        uid = await asyncio.to_thread(peer_uid, (peer[0], peer[1]), (here[0], here[1]))
        if uid in self.uids:
            return True
        self.refused += 1
        log.warning(
            "%s: refused a connection to its Flower control port %d from uid %s (port %d): "
            "only the federation's owner and werkhub may use it",
            self.name,
            self.port,
            "unknown" if uid is None else uid,
            peer[1],
        )
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._open.handling(writer):
            if not await self._admitted(writer):
                writer.transport.abort()
                return
            try:
                up_reader, up_writer = await asyncio.open_unix_connection(str(self.link_socket))
            except OSError:
                return
            async with self._open.upstream(up_writer):
                down = asyncio.ensure_future(pump(up_reader, writer))
                await pump(reader, up_writer)
                await down

    async def close(self) -> None:
        await self._open.close()


def werkhub_uid() -> int:
    return os.geteuid()
