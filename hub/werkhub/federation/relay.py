"""werkhub's end of a SuperNode's relay: a unix socket (bound into the party's sandbox)
whose every connection is passed on to the SuperLink's ``127.0.0.1:PORT``, counting the
bytes each way. TLS runs end to end through it: the relay sees only ciphertext."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

CHUNK = 65536


class Relay:
    """One party's relay to its federation's SuperLink."""

    def __init__(self, socket_path: Path, link_port: int) -> None:
        self.socket_path = socket_path
        self.link_port = link_port
        #: bytes from the party to the SuperLink / from the SuperLink to the party
        self.sent = 0
        self.received = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, uid: int | None = None) -> None:
        """Listen on the socket (made afresh; owned by ``uid``, who alone may connect)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        if uid is not None:
            os.chown(self.socket_path, uid, uid)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool):
        try:
            while data := await reader.read(CHUNK):
                if up:
                    self.sent += len(data)
                else:
                    self.received += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                if writer.can_write_eof():
                    writer.write_eof()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.link_port)
            except OSError:
                return
            try:
                await asyncio.gather(
                    self._pump(reader, up_writer, True), self._pump(up_reader, writer, False)
                )
            finally:
                up_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def counts(self) -> dict[str, int]:
        return {"sent": self.sent, "received": self.received}

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
