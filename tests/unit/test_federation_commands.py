"""Pure rules of the Flower runtime: command lines, configuration texts, JSON answers;
the federation CA's certificate names; the sandbox's moved binds and private network."""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from pathlib import Path

import pytest

from werkhub.errors import Invalid, Upstream
from werkhub.federation import commands as c
from werkhub.federation.layout import FederationFolder
from werkhub.federation.pki import Pki, certificate_names, fingerprint, make_ca, make_node_keys
from werkhub.federation.relay import Refused, allowed, request_target
from werkhub.sandbox.spec import SandboxError, SandboxSpec, build_argv


def test_superlink_argv_has_tls_auth_database_and_no_runtime_installs() -> None:
    argv = c.superlink_argv("/f/bin", 41234, "/s/link/superlink.db")
    assert argv[0] == "/f/bin/flower-superlink"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "41234"
    assert argv[argv.index("--ssl-certfile") + 1] == "/werkhub/tls/server.pem"
    assert argv[argv.index("--ssl-keyfile") + 1] == "/werkhub/tls/server.key"
    assert argv[argv.index("--ssl-ca-certfile") + 1] == "/werkhub/tls/ca.pem"
    assert argv[argv.index("--database") + 1] == "/s/link/superlink.db"
    assert "--enable-supernode-auth" in argv
    assert "--disable-runtime-dependency-installation" in argv
    assert "--insecure" not in argv


def test_supernode_argv_talks_tls_to_its_relay_with_its_key_and_node_config() -> None:
    argv = c.supernode_argv("/f/bin", "acme", 9092, max_wait=600)
    assert argv[argv.index("--superlink") + 1] == "127.0.0.1:9092"
    assert argv[argv.index("--root-certificates") + 1] == "/werkhub/tls/ca.pem"
    assert argv[argv.index("--auth-supernode-private-key") + 1] == "/werkhub/keys/node.key"
    assert argv[argv.index("--node-config") + 1] == 'data-dir="/data" party="acme"'
    assert argv[argv.index("--port") + 1] == str(c.NODE_RUNTIME_PORT)
    assert argv[argv.index("--max-wait-time") + 1] == "600"
    assert "--insecure" not in argv and "--allow-runtime-dependency-installation" not in argv


@pytest.mark.parametrize("slug", ["", "Acme", "a b", 'a"b', "-x", "a" * 64])
def test_a_bad_slug_never_reaches_a_command_line(slug: str) -> None:
    with pytest.raises(Invalid):
        c.node_config(slug)


def test_relay_argv_runs_the_launcher_isolated_then_the_supernode() -> None:
    argv = c.relay_argv("/f/bin/python", "/w/relay_inside.py", 9092, "/werkhub/relay/s", ["n"])
    assert argv == [
        "/f/bin/python",
        "-I",
        "-S",
        "/w/relay_inside.py",
        "9092",
        "/werkhub/relay/s",
        "--",
        "n",
    ]


def test_connection_toml_is_flowers_format_with_tls() -> None:
    text = c.connection_toml("127.0.0.1:41234", '/s/p"ki/ca.pem', "fed-7")
    data = tomllib.loads(text)
    assert data["superlink"]["default"] == "fed-7"
    conn = data["superlink"]["fed-7"]
    assert conn == {
        "address": "127.0.0.1:41234",
        "root-certificates": '/s/p"ki/ca.pem',
        "insecure": False,
    }
    with pytest.raises(Invalid):
        c.connection_toml("127.0.0.1:1", "ca.pem", "a]b")


def test_run_config_text_and_run_argv() -> None:
    text = c.run_config_text({"num-server-rounds": 3, "lr": 0.5, "on": True, "name": 'a "b"'})
    assert text == 'num-server-rounds=3 lr=0.5 on=true name="a \\"b\\""'
    assert tomllib.loads(c.run_config_text({"name": 'a "b"'})) == {"name": 'a "b"'}
    argv = c.run_argv("/f/bin", "/apps/x", {"num-server-rounds": 2})
    assert argv == [
        "/f/bin/flwr",
        "run",
        "/apps/x",
        "werkhub",
        "--run-config",
        "num-server-rounds=2",
    ]
    assert c.run_argv("/f/bin", "/apps/x", {}) == ["/f/bin/flwr", "run", "/apps/x", "werkhub"]
    for bad in ({"a b": 1}, {"x": [1]}, {"x": None}):
        with pytest.raises(Invalid):
            c.run_config_text(bad)


def test_parse_json_takes_flowers_answer_and_its_errors() -> None:
    assert c.parse_json('noise\n{"success": true, "run-id": "7"}', "x")["run-id"] == "7"
    with pytest.raises(Upstream, match="Public key already in use"):
        c.parse_json('{"success": false, "error-message": "Public key already in use"}', "reg")
    with pytest.raises(Upstream, match="no JSON"):
        c.parse_json("Traceback ...", "x")
    with pytest.raises(Upstream, match="unreadable"):
        c.parse_json("{nope", "x")


@pytest.mark.parametrize(
    ("flower", "werkhub"),
    [
        ("pending", "running"),
        ("starting", "running"),
        ("running", "running"),
        ("finished:completed", "finished"),
        ("finished:failed", "failed"),
        ("finished:stopped", "stopped"),
        ("finished:odd", "failed"),
    ],
)
def test_run_state(flower: str, werkhub: str) -> None:
    assert c.run_state(flower) == werkhub


def test_node_ids_of_a_listing() -> None:
    listing = {"nodes": [{"node-id": "12", "status": "online"}, {"node-id": "x"}, "junk"]}
    assert c.node_ids(listing) == {"12": "online"}


def test_layout_of_a_federation(tmp_path: Path) -> None:
    folder = FederationFolder.of(tmp_path, 7)
    assert folder.root == tmp_path / "federations" / "7"
    assert folder.database == folder.root / "link" / "superlink.db"
    party = folder.party("acme")
    assert party.out == folder.root / "parties" / "acme" / "out"
    with pytest.raises(Invalid):
        folder.party("../x")


def test_ca_and_server_certificate_are_made_once_for_loopback_only(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    assert make_ca(pki, "federation-1") is True
    assert certificate_names(pki.server_cert.read_bytes()) == (["localhost"], ["127.0.0.1"])
    assert certificate_names(pki.ca_cert.read_bytes()) == ([], [])
    first = pki.ca_cert.read_bytes()
    assert make_ca(pki, "federation-1") is False and pki.ca_cert.read_bytes() == first
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600
    assert not (pki.link / "ca.key").exists()  # the CA key is never where a sandbox looks


def test_node_keys_are_openssh_ec_p384_made_once(tmp_path: Path) -> None:
    private, public = make_node_keys(tmp_path / "keys", "acme@federation-1")
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert b"OPENSSH PRIVATE KEY" in private.read_bytes()
    assert private.stat().st_mode & 0o777 == 0o600
    again = make_node_keys(tmp_path / "keys", "acme@federation-1")
    assert again == (private, public) and fingerprint(public).startswith("SHA256:")


def test_sandbox_binds_elsewhere_and_private_network() -> None:
    spec = SandboxSpec(
        command=("run",),
        home="/s/fed/parties/acme/home",
        read_only_at=(("/s/homes/ann/data", "/data"), ("/s/pki/ca.pem", "/werkhub/tls/ca.pem")),
        writable_at=(("/tmp/wh/1-x", "/werkhub/relay"),),
        unshare_net=True,
        system=(),
    )
    argv = build_argv(spec)
    assert "--unshare-net" in argv
    joined = " ".join(argv)
    assert "--ro-bind /s/homes/ann/data /data" in joined
    assert "--ro-bind /s/pki/ca.pem /werkhub/tls/ca.pem" in joined
    assert "--bind /tmp/wh/1-x /werkhub/relay" in joined
    assert "/s/homes/ann" not in joined.replace("/s/homes/ann/data", "")
    # the folders above a moved bind are made (readable), once
    assert argv.count("/werkhub") == 1
    assert "--unshare-net" not in build_argv(SandboxSpec(command=("x",), home="/h", system=()))
    with pytest.raises(SandboxError):
        build_argv(SandboxSpec(command=("x",), home="/h", read_only_at=(("rel", "/d"),)))


def test_the_relay_passes_only_fleet_requests_it_can_frame() -> None:
    head = b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"
    assert request_target(head) == (b"/v1/fleet/pull-messages", 12, False)
    chunked = b"POST /v1/fleet/push HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert request_target(chunked) == (b"/v1/fleet/push", None, True)
    assert allowed(b"/v1/fleet/get-run")
    for target in (b"/v1/control/list-nodes", b"/v1/runtime/get-nodes", b"/v1/fleet/../control/x"):
        assert not allowed(target)
    assert not allowed(b"/v1/fleet/%2e%2e/control/list-runs")
    for bad in (
        b"GARBAGE\r\n\r\n",
        b"POST /v1/fleet/x HTTP/2\r\n\r\n",
        b"POST /v1/fleet/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/fleet/x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /v1/fleet/x HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
    ):
        with pytest.raises(Refused):
            request_target(bad)


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:D431 0100007F:9C41 01 00000000:00000000 00:00000000 00000000 236001        0 2 1
   2: 0100007F:9C41 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1
   3: 0100007F:D432 0100007F:9C41 01 00000000:00000000 00:00000000 00000000 236039        0 4 1
   4: garbage
"""
MAPPED = "0000000000000000FFFF00000100007F"  # ::ffff:127.0.0.1
LOOP6 = "00000000000000000000000001000000"  # ::1
TCP6 = (
    "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt uid ...\n"
    f"   0: {MAPPED}:D433 {MAPPED}:9C41 01 00000000:00000000 00:00000000 00000000 1000 0 5\n"
    f"   1: {LOOP6}:D434 {LOOP6}:9C41 01 00000000:00000000 00:00000000 00000000 1001 0 6\n"
)


@pytest.mark.skipif(sys.byteorder != "little", reason="the tables above are a little-endian host's")
def test_socket_owner_finds_the_connecting_sides_uid() -> None:
    relay = ("127.0.0.1", 0x9C41)
    # the connecting side's row (local = the peer, remote = the relay), not the accepted one
    assert c.socket_owner(TCP, ("127.0.0.1", 0xD431), relay) == 236001
    assert c.socket_owner(TCP, ("127.0.0.1", 0xD432), relay) == 236039
    assert c.socket_owner(TCP, relay, ("127.0.0.1", 0xD431)) == 0
    assert c.socket_owner(TCP, ("127.0.0.1", 0xD439), relay) is None
    assert c.socket_owner(TCP, ("127.0.0.2", 0xD431), relay) is None
    # tcp6: IPv4-mapped addresses count as IPv4; ::1 is not 127.0.0.1
    assert c.socket_owner(TCP6, ("127.0.0.1", 0xD433), relay) == 1000
    assert c.socket_owner(TCP6, ("127.0.0.1", 0xD434), relay) is None
    assert c.socket_owner(TCP6, ("::1", 0xD434), ("::1", 0x9C41)) == 1001
    assert c.socket_owner("", ("127.0.0.1", 1), relay) is None
    assert c.proc_net_address("0100007F:1F40") == ("127.0.0.1", 8000)
    with pytest.raises(ValueError):
        c.proc_net_address("7F:1F40")


def test_socket_owner_on_this_hosts_own_table() -> None:
    """A real loopback connection of this process: its own uid, from /proc/net/tcp."""
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("no /proc/net/tcp")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                table = Path("/proc/net/tcp").read_text()
                here, there = client.getsockname(), client.getpeername()
                assert c.socket_owner(table, here, there) == os.geteuid()


def test_the_superlinks_launcher_serves_a_unix_socket_then_execs_the_superlink() -> None:
    argv = c.link_relay_argv("/f/bin/python", "/r.py", "/werkhub/link/link.sock", 9190, ["x"])
    assert argv == [
        *("/f/bin/python", "-I", "-S", "/r.py", "--serve"),
        *("/werkhub/link/link.sock", "9190", "--", "x"),
    ]
