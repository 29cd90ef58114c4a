"""Pure rules of federations (standard library and pydantic only): the states of
federations, parties and runs and their moves, who may do what, the request bodies, the
SecAgg+ default, and the files a federation's Flower app writes (docs/federated-learning.md,
"Files"), read without trusting them.

Who may do what (``Actor`` of :mod:`werkhub.orgs.rules`):

* any organisation member creates a federation; their organisation owns it, they are its
  creator (the SuperLink runs in their sandbox, its MLflow runs are in their experiments);
* the owner organisation's admins invite organisations; they and the creator revoke
  parties, start and stop runs and get the ``flwr`` configuration;
* an invited organisation's admins accept (they become its party user) or decline; a
  party organisation's admins leave;
* platform admins may do everything, and see every federation;
* everyone else does not see the federation at all (404).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from werkhub.errors import Invalid
from werkhub.gpus.devices import parse_unit_id
from werkhub.orgs.rules import Actor, Slug

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$"
RUN_KEY_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
STRATEGIES = ("fedavg", "fedprox", "fedadam")
FEDERATION_STATES = ("open", "archived")
PARTY_STATES = ("invited", "accepted", "declined", "left", "revoked")
RUN_STATUSES = ("starting", "running", "finished", "failed", "stopped")
RUN_ENDED = frozenset({"finished", "failed", "stopped"})
MAX_ROUNDS = 500
MAX_PARTIES = 50
#: SecAgg+ is on by default from this many parties on
SECAGG_FROM = 3
#: the built-in template apps the owner may name instead of a folder of their own
TEMPLATES = ("federated-quality-inspection",)

#: what a party may do, from which state, and the state it leads to
PARTY_MOVES: dict[str, tuple[frozenset[str], str]] = {
    "invite": (frozenset({"declined", "left", "revoked"}), "invited"),
    "accept": (frozenset({"invited"}), "accepted"),
    "decline": (frozenset({"invited"}), "declined"),
    "leave": (frozenset({"accepted"}), "left"),
    "revoke": (frozenset({"invited", "accepted"}), "revoked"),
}
RUN_MOVES: dict[str, frozenset[str]] = {
    "starting": frozenset({"running", "failed", "stopped"}),
    "running": frozenset({"finished", "failed", "stopped"}),
    "finished": frozenset(),
    "failed": frozenset(),
    "stopped": frozenset(),
}

Name = Annotated[
    str,
    Field(
        min_length=2,
        max_length=40,
        pattern=NAME_PATTERN,
        description="lower-case letters, digits and dashes, e.g. quality-inspection",
    ),
]
Strategy = Literal["fedavg", "fedprox", "fedadam"]
Scalar = str | int | float | bool


def relative_folder(value: str, what: str) -> str:
    """``value`` as a clean path relative to a home folder, or ValueError saying why."""
    if not value or len(value) > 255:
        raise ValueError(f"{what} must be 1 to 255 characters")
    if "\x00" in value or "\\" in value:
        raise ValueError(f"{what} may not contain NUL or backslashes")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"{what} must be relative to your home folder, not start with /")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{what} must name a folder inside your home folder")
    if ".." in parts:
        raise ValueError(f"{what} may not leave your home folder (no '..')")
    if parts[0].startswith("."):
        raise ValueError(f"{what} may not be a hidden folder of your home")
    return "/".join(parts)


def check_run_config(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 32:
        raise ValueError("run_config may have at most 32 keys")
    for key, item in value.items():
        if not re.fullmatch(RUN_KEY_PATTERN, key):
            raise ValueError(
                f"run_config key '{key[:70]}' must be lower-case letters, digits, - and _, "
                "a letter first"
            )
        if isinstance(item, str) and len(item) > 500:
            raise ValueError(f"run_config value of '{key}' is longer than 500 characters")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"run_config value of '{key}' must be a finite number")
    return value


class AppSource(BaseModel):
    """The Flower app: a built-in template, or a folder in the owner's home."""

    model_config = ConfigDict(extra="forbid")

    template: Literal["federated-quality-inspection"] | None = None
    folder: str | None = Field(default=None, description="relative to the owner's home")

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        return None if value is None else relative_folder(value, "app folder")

    @model_validator(mode="after")
    def _one(self) -> AppSource:
        if (self.template is None) == (self.folder is None):
            raise ValueError("app names either a template or a folder, exactly one of them")
        return self


class FederationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    app: AppSource
    strategy: Strategy = "fedavg"
    rounds: int = Field(default=10, ge=1, le=MAX_ROUNDS)
    min_parties: int = Field(default=2, ge=2, le=MAX_PARTIES)
    secure_aggregation: bool | None = Field(
        default=None, description="Flower's SecAgg+; null: on for 3 or more parties"
    )
    invite: list[Slug] = Field(default_factory=list, max_length=MAX_PARTIES)
    run_config: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("invite")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("invite names an organisation twice")
        return value

    @field_validator("run_config")
    @classmethod
    def _run_config(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_run_config(value)


class Invitation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org: Slug


class Acceptance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_folder: str = Field(
        description="the organisation's data for this federation: a folder in your home, "
        "relative to it; the party's code reads it (read-only) and nothing else"
    )
    gpus: int = Field(default=0, ge=0, le=8, description="GPUs booked for each run")

    @field_validator("data_folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        return relative_folder(value, "data_folder")


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int | None = Field(default=None, ge=1, le=MAX_ROUNDS)
    run_config: dict[str, Scalar] | None = None

    @field_validator("run_config")
    @classmethod
    def _run_config(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_run_config(value)


# who may do what ---------------------------------------------------------------------
@dataclass(frozen=True)
class Standing:
    """The caller's relation to one federation."""

    actor: Actor
    owner: str
    owner_org: str
    parties: dict[str, str]  # org slug -> party state

    @property
    def owns(self) -> bool:
        """Creator, owner organisation admin or platform admin."""
        a = self.actor
        return a.platform_admin or a.name == self.owner or (a.org == self.owner_org and a.org_admin)

    @property
    def sees(self) -> bool:
        a = self.actor
        return a.platform_admin or a.org == self.owner_org or (a.org in self.parties)

    def invites(self) -> bool:
        a = self.actor
        return a.platform_admin or (a.org == self.owner_org and a.org_admin)

    def answers_for(self, slug: str) -> bool:
        """May act for organisation ``slug``'s party (accept, decline, leave)."""
        a = self.actor
        return a.platform_admin or (a.org == slug and a.org_admin)


def party_move(action: str, slug: str, current: str | None) -> str:
    """The state ``action`` moves party ``slug`` to from ``current`` (None: not a party
    yet), or ValueError with a sentence why not."""
    if action == "invite" and current is None:
        return "invited"
    allowed, target = PARTY_MOVES[action]
    if current is None:
        raise ValueError(f"organisation '{slug}' was not invited to this federation")
    if current not in allowed:
        raise ValueError(
            f"organisation '{slug}' is {current} in this federation; "
            f"only a party that is {' or '.join(sorted(allowed))} can be {past(action)}"
        )
    return target


def past(action: str) -> str:
    return {"invite": "invited", "leave": "left"}.get(action, action + "d")


def run_move(current: str, target: str) -> bool:
    return target in RUN_MOVES.get(current, frozenset())


def secure_aggregation(setting: bool | None, parties: int) -> bool:
    """SecAgg+ on or off for a run with ``parties`` parties (None: on from 3 parties)."""
    return parties >= SECAGG_FROM if setting is None else setting


def start_refusal(accepted: int, min_parties: int, running: bool) -> str | None:
    """Why a run may not start now (None: it may)."""
    if running:
        return "a run of this federation is still going; stop it or wait for its end"
    if accepted < min_parties:
        return (
            f"only {accepted} organisation(s) accepted; this federation needs at least "
            f"{min_parties} parties to start a run"
        )
    return None


def flower_run_config(
    strategy: str, rounds: int, min_parties: int, secagg: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    """The run config a federation's app gets (``--run-config``): the owner's own keys,
    then werkhub's (these win)."""
    return {
        **extra,
        "num-server-rounds": rounds,
        "strategy": strategy,
        "min-parties": min_parties,
        "secure-aggregation": secagg,
    }


WERKHUB_KEYS = ("num-server-rounds", "strategy", "min-parties", "secure-aggregation")


def fit_run_config(config: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """``config`` cut to the settings the app declares (``[tool.flwr.app.config]``;
    Flower refuses others): werkhub's own keys the app does not know are left out, an
    owner's key it does not know is a ValueError with a sentence."""
    unknown = sorted(k for k in config if k not in known and k not in WERKHUB_KEYS)
    if unknown:
        raise ValueError(
            f"run_config key(s) {', '.join(unknown)} are not settings of this app "
            f"(its settings: {', '.join(sorted(known)) or 'none'})"
        )
    return {k: v for k, v in config.items() if k in known}


def device_paths(booking: dict[str, Any]) -> tuple[str, ...]:
    """The host device files of a booking's GPUs (none for simulated GPUs, which have no
    device files; the booking still counts against the organisation's budget)."""
    if booking.get("simulated"):
        return ()
    paths = []
    for unit in booking.get("devices") or ():
        _, index, _, _ = parse_unit_id(str(unit))
        paths.append(f"/dev/nvidia{index}")
    return tuple(sorted(set(paths)))


#: a container server's home (the Docker and Kubernetes spawners mount the user's there)
CONTAINER_HOME = "/home/jovyan"


def default_flwr_home(spawner_kind: str, homes: str, user: str) -> str:
    """``$HOME/.flwr`` (where ``flwr`` looks for ``config.toml`` by default) with the home
    the user's own server has: the real home folder on the embedded default, the
    container's on Docker and Kubernetes."""
    home = CONTAINER_HOME if spawner_kind in ("docker", "kubernetes") else f"{homes}/{user}"
    return f"{home.rstrip('/')}/.flwr"


def check_flwr_home(value: str) -> str:
    """An absolute folder (Flower takes only an absolute path to the CA certificate that
    ``config.toml`` names), without ``..``, quotes or control characters."""
    parts = value.split("/")
    if (
        not value.startswith("/")
        or len(value) > 400
        or ".." in parts
        or any(c in value for c in "\"'\\")
        or any(ord(c) < 32 for c in value)
    ):
        raise Invalid(
            f"flwr_home must be an absolute folder such as /home/you/.flwr (got {value[:80]!r})",
            field="flwr_home",
        )
    return value.rstrip("/") or "/"


def model_name(owner: str, federation: str) -> str:
    """The registered model of a federation's final global models (owner's namespace)."""
    return f"{owner}~federation-{federation}"


def experiment_name(federation: str) -> str:
    return f"federation-{federation}"


# the files the app writes ---------------------------------------------------------
MAX_LINE = 16 * 1024
MAX_METRICS = 64


class AppFileError(Invalid, ValueError):
    """A file the app wrote is not what docs/federated-learning.md says (the supervisor
    turns it into the run's message; it never reaches an API caller)."""


def _int(value: Any, what: str, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AppFileError(f"{what} must be a whole number from {low} to {high}")
    return value


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AppFileError(f"{what} must be a number")
    if not math.isfinite(value):
        raise AppFileError(f"{what} must be finite")
    return float(value)


def metrics(value: Any, what: str = "metrics") -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METRICS:
        raise AppFileError(f"{what} must be an object of at most {MAX_METRICS} numbers")
    out: dict[str, float] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_.\-/ ]{1,64}", key):
            raise AppFileError(f"{what} has a key that is not a metric name")
        out[key] = _num(item, f"{what}.{key}")
    return out


def _object(line: str | bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise AppFileError(f"a line is longer than {MAX_LINE} bytes")
    try:
        data = json.loads(line)
    except ValueError:
        raise AppFileError("a line is not JSON") from None
    if not isinstance(data, dict):
        raise AppFileError("a line is not a JSON object")
    return data


@dataclass(frozen=True)
class Round:
    round: int
    parties: int
    loss: float | None
    metrics: dict[str, float]
    bytes_in: int
    bytes_out: int
    seconds: float


def parse_round(line: str | bytes) -> Round:
    data = _object(line)
    loss = data.get("loss")
    return Round(
        round=_int(data.get("round"), "round", 1, 100_000),
        parties=_int(data.get("parties"), "parties", 0, 10_000),
        loss=None if loss is None else _num(loss, "loss"),
        metrics=metrics(data.get("metrics")),
        bytes_in=_int(data.get("bytes_in", 0), "bytes_in"),
        bytes_out=_int(data.get("bytes_out", 0), "bytes_out"),
        seconds=_num(data.get("seconds", 0.0), "seconds"),
    )


@dataclass(frozen=True)
class Local:
    round: int
    examples: int
    metrics: dict[str, float]


def parse_local(line: str | bytes) -> Local:
    data = _object(line)
    return Local(
        round=_int(data.get("round"), "round", 1, 100_000),
        examples=_int(data.get("examples", 0), "examples"),
        metrics=metrics(data.get("metrics")),
    )


@dataclass(frozen=True)
class Final:
    rounds: int
    metrics: dict[str, float]
    classes: tuple[str, ...]
    model: str


def parse_final(text: str | bytes) -> Final:
    data = _object(text)
    classes = data.get("classes", [])
    if (
        not isinstance(classes, list)
        or len(classes) > 10_000
        or not all(isinstance(c, str) and len(c) <= 200 for c in classes)
    ):
        raise AppFileError("classes must be a list of names")
    model = data.get("model", "model.npz")
    if not isinstance(model, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}\.npz", model):
        raise AppFileError("model must name an .npz file next to final.json")
    return Final(
        rounds=_int(data.get("rounds"), "rounds", 0, 100_000),
        metrics=metrics(data.get("metrics")),
        classes=tuple(classes),
        model=model,
    )


def parse_error(text: str | bytes) -> str:
    """The sentence of ``error.json`` (shortened, control characters dropped)."""
    try:
        data = _object(text)
    except AppFileError:
        return "the federation's app ended with an error it could not describe"
    message = data.get("message")
    if not isinstance(message, str) or not message.strip():
        return "the federation's app ended with an error it could not describe"
    clean = "".join(c if c.isprintable() else " " for c in message).strip()
    return clean[:1000]
