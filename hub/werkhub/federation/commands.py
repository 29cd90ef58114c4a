"""Pure rules of the Flower runtime: the command lines, environments and configuration
texts of a federation's SuperLink, SuperNodes and the ``flwr`` CLI.

Flower runs from its own virtual environment (``flower_bin``); werkhub never imports it.
Nothing here touches the disk or starts a process.
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
from collections.abc import Mapping
from typing import Any

from werkhub.errors import Invalid, Upstream

#: paths inside a SuperNode's sandbox
NODE_DATA = "/data"
NODE_TLS = "/werkhub/tls"
NODE_KEYS = "/werkhub/keys"
NODE_RELAY = "/werkhub/relay"
RELAY_SOCKET = "link.sock"
#: inside its own network namespace the SuperNode's runtime API may keep a fixed port
NODE_RUNTIME_PORT = 9094
#: the SuperLink's TLS files inside its sandbox
LINK_TLS = "/werkhub/tls"
#: the folder (bound in from outside) of the unix socket to the SuperLink's port
LINK_RELAY = "/werkhub/link"
#: the SuperLink's port inside its own network namespace (never on the host)
LINK_INNER_PORT = 9190
#: the name of the federation's connection in ``config.toml``
CONNECTION = "werkhub"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_NODE_ID = re.compile(r"^\d+$")


#: environment every Flower process gets: no telemetry, no usage statistics, no colour
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
    "HF_HUB_OFFLINE": "1",
    "PIP_NO_INDEX": "1",
    "UV_OFFLINE": "1",
    "NO_COLOR": "1",
    "TERM": "dumb",
    "PYTHONUNBUFFERED": "1",
}


def check_slug(slug: str) -> str:
    if not _SLUG.match(slug):
        raise Invalid(f"not an organisation slug: {slug!r}", field="slug")
    return slug


def superlink_argv(flower_bin: str, port: int, database: str, tls: str = LINK_TLS) -> list[str]:
    """``flower-superlink`` on ``127.0.0.1:port``: TLS from the federation's CA, SuperNode
    authentication on, state in ``database``, never installing dependencies at run time."""
    return [
        f"{flower_bin}/flower-superlink",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ssl-certfile",
        f"{tls}/server.pem",
        "--ssl-keyfile",
        f"{tls}/server.key",
        "--ssl-ca-certfile",
        f"{tls}/ca.pem",
        "--enable-supernode-auth",
        "--database",
        database,
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]


def node_config(slug: str, data_dir: str = NODE_DATA) -> str:
    """The ``--node-config`` text of a party's SuperNode."""
    check_slug(slug)
    return f'data-dir="{data_dir}" party="{slug}"'


def supernode_argv(
    flower_bin: str,
    slug: str,
    link_port: int,
    runtime_port: int = NODE_RUNTIME_PORT,
    ca: str = f"{NODE_TLS}/ca.pem",
    key: str = f"{NODE_KEYS}/node.key",
    max_wait: int | None = None,
) -> list[str]:
    """``flower-supernode`` talking TLS to ``127.0.0.1:link_port`` (its relay), verified
    against the federation's CA, authenticated with the party's key."""
    argv = [
        f"{flower_bin}/flower-supernode",
        "--superlink",
        f"127.0.0.1:{link_port}",
        "--root-certificates",
        ca,
        "--auth-supernode-private-key",
        key,
        "--node-config",
        node_config(slug),
        "--isolation",
        "subprocess",
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
    ]
    if max_wait is not None:
        argv += ["--max-wait-time", str(max_wait)]
    return argv


def relay_argv(python: str, script: str, port: int, socket: str, then: list[str]) -> list[str]:
    """The in-sandbox launcher: relay ``127.0.0.1:port`` to the unix ``socket``, then exec
    ``then`` (the SuperNode)."""
    return [python, "-I", "-S", script, str(port), socket, "--", *then]


def link_relay_argv(python: str, script: str, socket: str, port: int, then: list[str]) -> list[str]:
    """The SuperLink's in-sandbox launcher: relay the unix ``socket`` to
    ``127.0.0.1:port`` inside, then exec ``then`` (the SuperLink)."""
    return [python, "-I", "-S", script, "--serve", socket, str(port), "--", *then]


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def connection_toml(address: str, ca_path: str, name: str = CONNECTION) -> str:
    """The ``config.toml`` (``$FLWR_HOME``) whose default connection is the federation's
    SuperLink over TLS."""
    if not re.match(r"^[A-Za-z0-9_-]{1,64}$", name):
        raise Invalid(f"not a connection name: {name!r}", field="name")
    return (
        "[superlink]\n"
        f"default = {_toml_string(name)}\n\n"
        f"[superlink.{name}]\n"
        f"address = {_toml_string(address)}\n"
        f"root-certificates = {_toml_string(ca_path)}\n"
        "insecure = false\n"
    )


def toml_value(value: Any) -> str:
    """One run-config value as TOML (``bool``, ``int``, ``float``, ``str``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise Invalid(f"run_config values are numbers, strings or booleans (got {value!r})")


def run_config_text(run_config: Mapping[str, Any]) -> str:
    """The ``--run-config`` text of ``flwr run`` ('k1=v1 k2="v2"')."""
    parts = []
    for key, value in run_config.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$", key):
            raise Invalid(f"not a run_config key: {key!r}", field="run_config")
        parts.append(f"{key}={toml_value(value)}")
    return " ".join(parts)


def flwr_argv(flower_bin: str, *args: str) -> list[str]:
    """``flwr ARGS`` (werkhub's calls add ``--format json``)."""
    return [f"{flower_bin}/flwr", *args]


def run_argv(flower_bin: str, app_dir: str, run_config: Mapping[str, Any]) -> list[str]:
    argv = flwr_argv(flower_bin, "run", app_dir, CONNECTION)
    text = run_config_text(run_config)
    return [*argv, "--run-config", text] if text else argv


def parse_json(stdout: str, what: str) -> dict[str, Any]:
    """The JSON object the ``flwr`` CLI printed (``--format json``); its own error message
    when it says ``success: false``."""
    start = stdout.find("{")
    if start < 0:
        raise Upstream(f"{what}: Flower printed no JSON ({stdout.strip()[-300:]!r})")
    try:
        data = json.loads(stdout[start:])
    except json.JSONDecodeError as err:
        raise Upstream(f"{what}: Flower printed unreadable JSON ({err})") from err
    if not isinstance(data, dict):
        raise Upstream(f"{what}: Flower printed {type(data).__name__}, not an object")
    if data.get("success") is False:
        raise Upstream(f"{what}: {data.get('error-message') or 'Flower says it failed'}")
    return data


#: Flower's run states (``status`` ``sub-status``) -> werkhub's
_STATUS = {"pending": "running", "starting": "running", "running": "running"}
_FINISHED = {"completed": "finished", "failed": "failed", "stopped": "stopped"}


def run_state(status: str) -> str:
    """werkhub's run status of Flower's ``"finished:completed"``-style status text."""
    head, _, sub = status.lower().partition(":")
    if head == "finished":
        return _FINISHED.get(sub, "failed")
    return _STATUS.get(head, "running")


def node_ids(listing: Mapping[str, Any]) -> dict[str, str]:
    """node id -> status (``online``, ``offline``, ``registered``, ...) from ``flwr
    supernode list --format json``."""
    found: dict[str, str] = {}
    for node in listing.get("nodes", []) or []:
        if isinstance(node, dict) and _NODE_ID.match(str(node.get("node-id", ""))):
            found[str(node["node-id"])] = str(node.get("status", ""))
    return found


# -- who is on the other end of a loopback TCP connection (/proc/net/tcp, tcp6) ----------
def proc_net_address(text: str) -> tuple[str, int]:
    """``("127.0.0.1", 8000)`` of ``/proc/net/tcp``'s ``0100007F:1F40`` (each 32-bit word
    of the address in the host's byte order, as the kernel prints it; IPv4-mapped IPv6
    addresses of ``tcp6`` as IPv4)."""
    address, _, port = text.partition(":")
    if len(address) not in (8, 32) or not port:
        raise ValueError(f"not an address of /proc/net/tcp: {text!r}")
    raw = b"".join(
        struct.pack("=I", int(address[i : i + 8], 16)) for i in range(0, len(address), 8)
    )
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def socket_owner(table: str, local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The ``uid`` column of the row of ``/proc/net/tcp`` (or ``tcp6``) text ``table``
    whose local address is ``local`` and remote address ``remote``: the uid that made that
    socket (the fsuid of the process then). ``None`` when no row matches."""
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            here, there = proc_net_address(fields[1]), proc_net_address(fields[2])
            uid = int(fields[7])
        except ValueError:
            continue
        if here == local and there == remote:
            return uid
    return None
