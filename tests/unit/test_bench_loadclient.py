"""The benchmarks' lean HTTP/1.1 client (bench/loadclient.py) against a loopback server that
answers the ways servers do: Content-Length on a kept-alive connection, chunked, a body
that runs to the close, a connection closed after the answer, and garbage."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from loadclient import Connection, TransportError, load, percentile, spread

ANSWERS = {
    "/length": b'HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{"a": "b"}\n',
    "/chunked": (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n6;x=y\r\n: "bc"\r\n1\r\n}\r\n0\r\n\r\n'
    ),
    "/close": b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno",
    "/eof": b"HTTP/1.1 200 OK\r\n\r\nto the end",
    "/garbage": b"SMTP ready\r\n\r\n",
}


async def serve(seen: list[tuple[str, str, bytes]]) -> asyncio.Server:
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method, target, _ = head.split("\r\n", 1)[0].split(" ")
                length = 0
                for line in head.split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":")[1])
                body = await reader.readexactly(length)
                seen.append((method, target, body))
                path = target.split("?")[0].removeprefix("/api")
                writer.write(ANSWERS[path])
                await writer.drain()
                if path in ("/close", "/eof", "/garbage"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(one, "127.0.0.1", 0)


async def exchange() -> tuple[list, list]:
    seen: list[tuple[str, str, bytes]] = []
    server = await serve(seen)
    port = server.sockets[0].getsockname()[1]
    client = Connection(f"http://127.0.0.1:{port}/api", timeout=5)
    replies = [
        await client.get("/length", headers={"X": "1"}, params={"gpu_type": "H100", "step": 60}),
        await client.post("/chunked", headers={}, json={"count": 1}),
        await client.get("/close", headers={}),
        await client.get("/length", headers={}),  # a new connection after the close
        await client.get("/eof", headers={}),
    ]
    with pytest.raises(TransportError):
        await client.get("/garbage", headers={})
    await client.aclose()
    server.close()
    await server.wait_closed()
    return seen, replies


def test_answers_the_ways_servers_send_them() -> None:
    seen, replies = asyncio.run(exchange())
    assert [r.status_code for r in replies] == [200, 201, 409, 200, 200]
    assert replies[0].json() == {"a": "b"} and replies[1].json() == {"a": "bc"}
    assert replies[2].content == b"no" and replies[4].content == b"to the end"
    assert seen[0] == ("GET", "/api/length?gpu_type=H100&step=60", b"")
    assert seen[1][:2] == ("POST", "/api/chunked") and json.loads(seen[1][2]) == {"count": 1}


def test_closed_loops_count_answers_and_failures() -> None:
    async def run() -> tuple:
        server = await serve([])
        port = server.sockets[0].getsockname()[1]

        async def good(client: Connection, token: str, i: int):
            return await client.get("/length", headers={"Authorization": f"token {token}"})

        async def bad(client: Connection, token: str, i: int):
            return await client.get("/garbage", headers={})

        api = f"http://127.0.0.1:{port}/api"
        ok = await load(api, spread(["t1", "t2", "t3", "t4"], 2), good, per_client=5)
        failed = await load(api, [["t"]], bad, per_client=3, warmup=0)
        server.close()
        await server.wait_closed()
        return ok, failed

    ok, failed = asyncio.run(run())
    assert ok.total == 10 and len(ok.ok()) == 10 and ok.errors == 0
    assert failed.total == failed.errors == 3 and "transport-x3" in failed.line()
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
