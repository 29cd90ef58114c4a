"""Where a federation's files lie under ``<state>/federations/<fid>/`` (pure: paths only).

    pki/                 the CA (``ca.pem``, ``ca.key``) and ``link/`` (the SuperLink's
                         certificate and key, and the CA certificate: what its sandbox sees)
    flwr-home/           werkhub's own FLWR_HOME (``config.toml``: the connection)
    link/                the SuperLink sandbox's home: ``superlink.db``, its FLWR_HOME,
                         ``port`` (the port it listens on, kept across restarts)
    link.log             what the SuperLink (and the ServerApp) printed
    runs/<run-id>/       what the ServerApp writes (rounds.jsonl, final.json, error.json)
    parties/<slug>/      keys/ (node.key, node.pub), node.json (Flower's node id), out/ (the
                         ClientApp's files), home/ (the sandbox's scratch home), node.log,
                         revoked/ (keys unregistered before: Flower never takes one again)

The relay sockets (each party's, and ``<fid>-link/link.sock``: the SuperLink sandbox's)
lie in a short folder of the runtime's own (a unix socket's path has at most 107 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from werkhub.federation.commands import check_slug


@dataclass(frozen=True)
class FederationFolder:
    root: Path

    @classmethod
    def of(cls, state: Path, federation_id: int) -> FederationFolder:
        return cls(state / "federations" / str(int(federation_id)))

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def flwr_home(self) -> Path:
        return self.root / "flwr-home"

    @property
    def link(self) -> Path:
        return self.root / "link"

    @property
    def database(self) -> Path:
        return self.link / "superlink.db"

    @property
    def port_file(self) -> Path:
        return self.link / "port"

    @property
    def link_log(self) -> Path:
        return self.root / "link.log"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def party(self, slug: str) -> PartyFolder:
        return PartyFolder(self.root / "parties" / check_slug(slug))


@dataclass(frozen=True)
class PartyFolder:
    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def node_json(self) -> Path:
        return self.root / "node.json"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def log(self) -> Path:
        return self.root / "node.log"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked"
