"""Embedded default: one local process per user, with a home folder under the state folder.

The process runs as the same operating-system user as the hub, so it gives no
isolation between users beyond separate home folders: use the Docker or Kubernetes
backend where users must not reach each other's files.
"""

from __future__ import annotations

import os
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner


class WerkhubLocalSpawner(SimpleLocalProcessSpawner):
    """Local process spawner with per-user homes and the werkhub environment."""

    def get_args(self) -> list[str]:
        args = super().get_args()
        if os.geteuid() == 0:
            # Jupyter Server refuses root unless told; the embedded default on a root-run
            # machine (CI, single-admin boxes) must still start
            args.append("--allow-root")
        return args

    def make_preexec_fn(self, name: str) -> Any:
        home = self.home_dir

        def preexec() -> None:
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec
