"""Loopback ports: free ones for servers the tests and benchmarks start, and probes."""

from __future__ import annotations

import socket
from contextlib import closing

HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 just now (all held open until each is
    chosen, so they differ; a server started right after binds them)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """One port free on 127.0.0.1 just now."""
    return free_ports(1)[0]


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with closing(socket.socket()) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0
