"""What werkhub's two relays of a federation share (the party's Fleet relay,
:mod:`werkhub.federation.relay`, and the owner's control relay,
:mod:`werkhub.federation.control`): copying one direction of a connection, and the book of
open connections that ``close()`` cuts."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable

CHUNK = 65536
#: what ends a copy quietly: the other side went away (or its TLS did)
GONE = (ConnectionError, OSError, ssl.SSLError)


async def pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    count: Callable[[int], None] | None = None,
) -> None:
    """Copy ``reader`` to ``writer`` until the end (``count`` told each chunk's size), then
    pass the end on."""
    try:
        while data := await reader.read(CHUNK):
            if count is not None:
                count(len(data))
            writer.write(data)
            await writer.drain()
    except GONE:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
            if writer.can_write_eof():
                writer.write_eof()


class Connections:
    """A relay's listening server and open connections, so that :meth:`close` stops it
    and cuts them (a cancelled handler task would be logged as an error: its sockets are
    aborted instead and the handlers end on their own)."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @contextlib.asynccontextmanager
    async def handling(self, writer: asyncio.StreamWriter) -> AsyncIterator[None]:
        """Around one connection's handler: known while it runs, closed at its end."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        try:
            yield
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def upstream(self, writer: asyncio.StreamWriter) -> AsyncIterator[None]:
        """Around the use of a connection the relay opened on a client's behalf."""
        self._writers.add(writer)
        try:
            yield
        finally:
            writer.close()
            self._writers.discard(writer)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
