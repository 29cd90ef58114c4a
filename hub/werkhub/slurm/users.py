"""Hub users as operating-system users: Slurm runs every job as an OS user.

The mapping (``slurm.user_mapping``) is pure: ``same`` (the hub name), ``prefix``
(``wh-`` + the hub name) or ``map`` (only the names listed); entries of ``map`` win in
every mode. Whether the OS user exists is asked of ``pwd`` (the hub's host must see the
cluster's users, through the same directory service); with ``slurm.create_users`` a
missing user is made with ``useradd``. Every refusal names the hub user and the OS user.
"""

from __future__ import annotations

import pwd
import re
import subprocess
from collections.abc import Callable
from typing import Protocol

from werkhub.errors import Invalid
from werkhub.slurm.errors import NoOsAccount, SlurmError

#: names an OS user may have here (shadow's useradd accepts these; 32 characters at most)
OS_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
USERADD = "useradd"


class Mapping(Protocol):
    """What :func:`os_name` reads (``werkhub.config.schema.SlurmUserMapping``)."""

    mode: str
    prefix: str
    map: dict[str, str]


def os_name(hub_user: str, mapping: Mapping) -> str:
    """The OS user that ``hub_user``'s Slurm jobs run as; :class:`NoOsAccount` when the
    mapping gives none, :class:`werkhub.errors.Invalid` when it gives no valid name."""
    if hub_user in mapping.map:
        name = mapping.map[hub_user]
    elif mapping.mode == "same":
        name = hub_user
    elif mapping.mode == "prefix":
        name = f"{mapping.prefix}{hub_user}"
    else:
        raise NoOsAccount(
            f"hub user '{hub_user}' has no OS account for Slurm jobs: "
            "slurm.user_mapping.map has no entry for them"
        )
    if not OS_NAME.fullmatch(name):
        raise Invalid(
            f"hub user '{hub_user}' maps to '{name}', which cannot be an OS user name "
            "(1-32 of a-z 0-9 _ . -, starting with a letter or _); "
            "add an entry to slurm.user_mapping.map"
        )
    return name


def mapper(mapping: Mapping) -> Callable[[str], str]:
    """:func:`os_name` bound to ``mapping``: hub user -> OS user."""
    return lambda hub_user: os_name(hub_user, mapping)


def exists(name: str) -> bool:
    """Whether this machine knows OS user ``name`` (files, LDAP: whatever NSS asks)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def require(hub_user: str, name: str, *, known: Callable[[str], bool] = exists) -> str:
    """``name`` when the OS user exists; :class:`NoOsAccount` naming both users otherwise."""
    if not known(name):
        raise NoOsAccount(
            f"hub user '{hub_user}' has no OS account '{name}' on the Slurm cluster, so "
            "Slurm cannot run their jobs; an administrator creates it (or sets "
            "slurm.create_users: true)"
        )
    return name


def ensure(
    hub_user: str,
    mapping: Mapping,
    *,
    create: bool = False,
    known: Callable[[str], bool] = exists,
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> str:
    """The OS user of ``hub_user``, made with ``useradd`` first when it is missing and
    ``create`` is set; :class:`NoOsAccount` when it is missing and may not be made."""
    name = os_name(hub_user, mapping)
    if known(name) or not create:
        return require(hub_user, name, known=known)
    argv = [USERADD, "--create-home", "--user-group", "--shell", "/bin/bash", name]
    try:
        result = run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(
            f"could not create OS user '{name}' for hub user '{hub_user}': {exc}"
        ) from exc
    if result.returncode != 0 and not known(name):  # 9: made meanwhile by someone else
        raise SlurmError(
            f"could not create OS user '{name}' for hub user '{hub_user}': "
            f"{(result.stderr or result.stdout).strip() or f'useradd exited {result.returncode}'}"
        )
    return require(hub_user, name, known=known)
