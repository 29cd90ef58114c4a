"""werkhub's end of a SuperNode's relay: a unix socket (bound into the party's sandbox)
whose every connection is passed on to the SuperLink (the unix socket of its sandbox, or
without a sandbox its ``127.0.0.1:PORT``), counting the bytes each way.

Flower 1.42 serves its Fleet, Control and Runtime APIs on one port, and its Control API
(register keys, start, list and stop runs, pull their artifacts) asks for no credentials
beyond TLS. A party must reach the Fleet API only, so the relay ends the SuperNode's TLS
itself (with the SuperLink's own certificate, which the SuperNode verifies against the
federation's CA), lets through only HTTP requests for ``/v1/fleet/...``, answers any other
with 403, and opens TLS anew to the SuperLink (verified against the same CA)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path
from typing import Any

from werkhub.errors import Forbidden
from werkhub.federation.streams import CHUNK, Connections, pump

HEAD_LIMIT = 64 * 1024
#: the only requests a SuperNode makes: Flower's Fleet API
ALLOWED = b"/v1/fleet/"


class Refused(Forbidden):
    """A request the relay does not pass on (the text says why)."""


def tls_contexts(cert: Path, key: Path, ca: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(towards the SuperNode: the SuperLink's certificate; towards the SuperLink:
    verified against the federation's CA)."""
    inner = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    inner.load_cert_chain(str(cert), str(key))
    inner.set_alpn_protocols(["http/1.1"])
    outer = ssl.create_default_context(cafile=str(ca))
    outer.set_alpn_protocols(["http/1.1"])
    return inner, outer


def request_target(head: bytes) -> tuple[bytes, int | None, bool]:
    """(target, Content-Length or None, chunked) of an HTTP/1.1 request head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise Refused("not an HTTP/1.1 request")
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            if not value.isdigit():
                raise Refused("bad Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value == b"chunked"
            if not chunked:
                raise Refused("unsupported Transfer-Encoding")
        elif name == b"upgrade":
            raise Refused("no protocol upgrades")
    return parts[1], length, chunked


def allowed(target: bytes) -> bool:
    return target.startswith(ALLOWED) and b".." not in target and b"%" not in target


class Relay:
    """One party's relay to its federation's SuperLink."""

    def __init__(
        self,
        socket_path: Path,
        link: int | Path,
        tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> None:
        self.socket_path = socket_path
        #: the SuperLink: its sandbox's unix socket, or a port on the host's loopback
        self.link = link
        self.tls = tls
        #: bytes from the party to the SuperLink / from the SuperLink to the party
        self.sent = 0
        self.received = 0
        #: requests answered 403 (not for the Fleet API)
        self.refused = 0
        self._open = Connections()

    async def start(self, uid: int | None = None) -> None:
        """Listen on the socket (made afresh; owned by ``uid``, who alone may connect)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        inner = self.tls[0] if self.tls else None
        self._open.server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), ssl=inner
        )
        os.chmod(self.socket_path, 0o600)
        if uid is not None:
            os.chown(self.socket_path, uid, uid)

    def _count_sent(self, n: int) -> None:
        self.sent += n

    def _count_received(self, n: int) -> None:
        self.received += n

    async def _forward(self, data: bytes, writer: asyncio.StreamWriter) -> None:
        self.sent += len(data)
        writer.write(data)
        await writer.drain()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Pass on Fleet API requests one by one; answer 403 to anything else and close."""
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                try:
                    target, length, chunked = request_target(head)
                    if not allowed(target):
                        raise Refused(
                            f"{target[:80].decode(errors='replace')} is not the Fleet API"
                        )
                except Refused as refusal:
                    self.refused += 1
                    text = f"werkhub's relay passes only Flower's Fleet API: {refusal}\n".encode()
                    writer.write(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n"
                        + f"content-length: {len(text)}\r\nconnection: close\r\n\r\n".encode()
                        + text
                    )
                    await writer.drain()
                    return
                await self._forward(head, up_writer)
                if chunked:
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        size = int(size_line.split(b";")[0].strip() or b"0", 16)
                        await self._forward(size_line, up_writer)
                        await self._forward(await reader.readexactly(size + 2), up_writer)
                        if size == 0:
                            break
                else:
                    left = length or 0
                    while left:
                        data = await reader.readexactly(min(left, CHUNK))
                        left -= len(data)
                        await self._forward(data, up_writer)
        except (ConnectionError, OSError, ssl.SSLError, ValueError, asyncio.LimitOverrunError):
            return
        except asyncio.IncompleteReadError:
            return

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        options: dict[str, Any] = {
            "ssl": self.tls[1] if self.tls else None,
            "server_hostname": "127.0.0.1" if self.tls else None,
            "limit": HEAD_LIMIT,
        }
        if isinstance(self.link, Path):
            return await asyncio.open_unix_connection(str(self.link), **options)
        return await asyncio.open_connection("127.0.0.1", self.link, **options)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._open.handling(writer):
            try:
                up_reader, up_writer = await self._upstream()
            except (OSError, ssl.SSLError):
                return
            async with self._open.upstream(up_writer):
                up = (
                    self._requests(reader, up_writer, writer)
                    if self.tls
                    else pump(reader, up_writer, self._count_sent)
                )
                down = asyncio.ensure_future(pump(up_reader, writer, self._count_received))
                await up
                # the client is gone or refused: what is still coming is nobody's
                await asyncio.wait({down}, timeout=1.0 if self.tls else None)
                down.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await down

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received}

    async def close(self) -> None:
        await self._open.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
