"""podman's Docker-compatible API, as DockerSpawner will use it: the fixture starts it on a
Unix socket only for tests that ask for it, and stops it by its PID."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def get(sock: Path, path: str) -> tuple[int, bytes]:
    connection = UnixHTTPConnection(sock)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_docker_api_lists_the_curated_images(podman_api: Path, built_images) -> None:
    assert get(podman_api, "/_ping") == (200, b"OK")
    status, body = get(podman_api, "/v1.41/images/json")
    assert status == 200
    tags = {tag for image in json.loads(body) for tag in image.get("RepoTags") or []}
    for tag in built_images.tags.values():
        assert f"localhost/{tag}" in tags or tag in tags, sorted(tags)
