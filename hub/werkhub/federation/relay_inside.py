"""The inside end of a relay, run in a sandbox before the Flower process it serves.

    python -I -S relay_inside.py PORT SOCKET -- COMMAND...
    python -I -S relay_inside.py --serve SOCKET PORT -- COMMAND...

The first form (a SuperNode's sandbox) listens on ``127.0.0.1:PORT`` (inside the
sandbox's own network namespace) and passes every connection on to the unix socket
``SOCKET`` (bound in from outside, where werkhub relays it to the SuperLink). The second
form (the SuperLink's sandbox) listens on the unix socket ``SOCKET`` (in a folder bound in
from outside, where werkhub connects to it) and passes every connection on to
``127.0.0.1:PORT`` inside (the SuperLink's port in its own network namespace).

Either way it then forks: the child relays, the parent execs ``COMMAND`` (the Flower
process). Standard library only: it runs on Flower's interpreter, not werkhub's. It ends
with its parent (and with the sandbox's PID namespace).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
CHUNK = 65536
USAGE = "usage: relay_inside.py [--serve SOCKET PORT | PORT SOCKET] -- COMMAND..."


def pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(CHUNK)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def to_unix(path: str) -> socket.socket:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        upstream.close()
        raise
    return upstream


def to_port(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port))


def serve(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = connect()
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def tcp_listener(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


def unix_listener(path: str) -> socket.socket:
    """A unix socket only its own uid may use (werkhub, root outside, passes anyway)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    return listener


def main(argv: list[str]) -> None:
    if len(argv) >= 5 and argv[0] == "--serve" and argv[3] == "--":
        path, port, command = argv[1], int(argv[2]), argv[4:]
        listener = unix_listener(path)
        connect: Callable[[], socket.socket] = lambda: to_port(port)  # noqa: E731
    elif len(argv) >= 4 and argv[2] == "--":
        port, path, command = int(argv[0]), argv[1], argv[3:]
        listener = tcp_listener(port)
        connect = lambda: to_unix(path)  # noqa: E731
    else:
        sys.exit(USAGE)
    parent = os.getpid()
    if os.fork() == 0:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        serve(listener, connect)
        os._exit(0)
    listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
