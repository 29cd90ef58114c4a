"""Layout of the state folder: every file werkhub writes at run time lives under it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StatePaths:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> StatePaths:
        return cls(Path(root).expanduser().resolve())

    @property
    def hub_db(self) -> Path:
        return self.root / "jupyterhub.sqlite"

    @property
    def cookie_secret(self) -> Path:
        return self.root / "secrets" / "jupyterhub_cookie_secret"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def cli_token(self) -> Path:
        return self.root / "secrets" / "cli-token"

    @property
    def users_db(self) -> Path:
        return self.root / "users.sqlite"

    @property
    def service_db(self) -> Path:
        return self.root / "werkhub.sqlite"

    @property
    def homes(self) -> Path:
        return self.root / "homes"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def orgs_file(self) -> Path:
        """The organisations' slugs, kept by the werkhub service for the hub's roles."""
        return self.root / "orgs.json"

    @property
    def lock(self) -> Path:
        return self.root / "werkhub.lock"

    @property
    def pid_file(self) -> Path:
        return self.root / "werkhub.pid"

    def create(self) -> None:
        """Create the folders, private to werkhub's OS user; the state folder and homes/
        may be passed through (0711) on the way to a home. ``werkhub.config.permissions``
        checks and repairs every mode at start-up."""
        self.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.homes.mkdir(mode=0o711, exist_ok=True)
        for folder in (self.mlflow, self.logs, self.secrets):
            folder.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.secrets, 0o700)
