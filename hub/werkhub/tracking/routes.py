"""Which MLflow routes the gateway passes on, and who guards each (pure rules).

The gateway is fail-closed: a request reaches MLflow only when its method and path
(below the gateway's prefix, percent-decoded) match an allowing rule of :data:`RULES`,
each of which names its cover: MLflow's own permission check, MLflow filtering the
answer down to what the caller may read, the gateway's own name-space check, or
nothing to guard (static files, the UI shell). Everything else is refused, either by
an explicit denying rule that says why or, for a route nobody has classified, as
unknown. ``tests/unit/test_mlflow_routes.py`` enumerates every route of the installed
MLflow and proves that each one is classified here and that each stated cover is what
MLflow really does, so a new MLflow version with new routes fails that test.

Experiment name spaces: a name that begins with ``<user>/`` belongs to that user, one
that begins with ``<group>/`` to the members of that hub group. Only they (and hub
admins) may create an experiment with such a name or rename one to it; names without
``/`` are free for anyone. The rule guards creation and renaming only: an experiment
created before it existed keeps its name and its permissions (an admin renames or
deletes a squatted one); restoring a deleted experiment is checked like a create.

Registered model name spaces: the same rule with ``~`` in place of ``/``: a model named
``ann~classifier`` belongs to the user ``ann``, ``team~classifier`` to the members of the
hub group ``team``. MLflow refuses ``/`` and ``:`` in model names (``models:/<name>/1``
URIs split at ``/``), ``@`` separates an alias in ``models:/<name>@champion``, and
``.``, ``_`` and ``-`` occur in hub user and group names; ``~`` is none of these, needs
no escaping in URLs and reads as "whose" (``~ann``). Only create and rename set a
model's name; the gateway checks both.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum

from werkhub.errors import Invalid


class Cover(Enum):
    """Who stops a caller without permission on an allowed route."""

    #: MLflow's basic-auth app checks the caller's permission before the handler runs
    MLFLOW = "MLflow's permission check (before-request validator)"
    #: the handler or an after-request filter answers only what the caller may read
    MLFLOW_FILTER = "MLflow filters the answer to what the caller may read"
    #: the gateway checks the experiment name space, then MLflow checks permissions
    NAMESPACE = "the gateway's name-space check, then MLflow's permission check"
    #: any signed-in user: the UI shell, version, the caller's own identity
    SIGNED_IN = "any signed-in user; the answer holds no one else's data"
    #: no login and no data at all (health probe, static files, server capabilities)
    PUBLIC = "public in MLflow; no data"
    #: not passed on
    DENIED = "refused by the gateway"


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    cover: Cover
    why: str = ""

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.pattern.fullmatch(path) is not None


ANY = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
GET = frozenset({"GET"})
POST = frozenset({"POST"})
READ_WRITE = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})

#: REST (clients) and ajax (the UI) forms of MLflow's API versions
V2 = r"/(?:ajax-)?api/2\.0/mlflow"
V3 = r"/(?:ajax-)?api/3\.0/mlflow"
ARTIFACTS = r"/(?:ajax-)?api/2\.0/mlflow-artifacts"

HUB_ACCOUNTS = "MLflow accounts are managed by the hub (users, admins, passwords)."
HUB_SHARING = (
    "Sharing is managed by werkhub: use the Share button, "
    "/services/werkhub/api/experiments/<id>/share or /services/werkhub/api/models/<name>/share."
)
NOT_OFFERED = "werkhub does not offer this MLflow feature ({})."


def _rule(methods: frozenset[str], pattern: str, cover: Cover, why: str = "") -> Rule:
    return Rule(methods, re.compile(pattern), cover, why)


def _deny(pattern: str, why: str) -> Rule:
    return _rule(ANY, pattern, Cover.DENIED, why)


#: first match wins; patterns are full matches of the path below the gateway's prefix
RULES: tuple[Rule, ...] = (
    # -- nothing to guard ----------------------------------------------------------------
    _rule(GET, r"/health", Cover.PUBLIC),
    _rule(GET, r"/static-files/.+", Cover.PUBLIC),
    _rule(GET, V3 + r"/server-info", Cover.PUBLIC),
    _rule(GET, r"/", Cover.SIGNED_IN),
    _rule(GET, r"/version", Cover.SIGNED_IN),
    _rule(GET, V3 + r"/ui-telemetry", Cover.SIGNED_IN),
    _rule(GET, V2 + r"/users/current", Cover.SIGNED_IN),
    _rule(GET, V3 + r"/users/current/permissions", Cover.SIGNED_IN),
    # -- experiments -------------------------------------------------------------------------
    _rule(POST, V2 + r"/experiments/(?:create|update|restore)", Cover.NAMESPACE),
    _rule(GET, V2 + r"/experiments/(?:get|get-by-name)", Cover.MLFLOW),
    _rule(
        POST, V2 + r"/experiments/(?:delete|set-experiment-tag|delete-experiment-tag)", Cover.MLFLOW
    ),
    _rule(frozenset({"GET", "POST"}), V2 + r"/experiments/search", Cover.MLFLOW_FILTER),
    _rule(POST, V2 + r"/experiments/search-datasets", Cover.MLFLOW),
    # MLflow also registers it without the "/" after the version, and guards only the
    # correct spelling (the other one is denied by MLflow's fail-closed net too)
    _deny(r"/(?:ajax-)?api/2\.0mlflow/.*", "Misspelt MLflow route; use /api/2.0/mlflow/..."),
    # -- runs, metrics, artifacts ---------------------------------------------------------------
    _deny(V2 + r"/runs/create-promptlab-run", NOT_OFFERED.format("prompt lab")),
    _rule(POST, V2 + r"/runs/search", Cover.MLFLOW_FILTER),
    _rule(GET, V2 + r"/runs/get", Cover.MLFLOW),
    _rule(POST, V2 + r"/runs/[a-z-]+", Cover.MLFLOW),
    _rule(GET, V2 + r"/metrics/[a-z-]+", Cover.MLFLOW),
    _rule(frozenset({"GET", "POST"}), V2 + r"/artifacts/[a-z-]+", Cover.MLFLOW),
    _rule(POST, V2 + r"/upload-artifact", Cover.MLFLOW),
    _rule(GET, r"/get-artifact", Cover.MLFLOW),
    _rule(GET, r"/model-versions/get-artifact", Cover.MLFLOW),
    _rule(READ_WRITE, ARTIFACTS + r"/artifacts(?:/.+)?", Cover.MLFLOW),
    _rule(POST, ARTIFACTS + r"/mpu/(?:create|complete|abort)/.+", Cover.MLFLOW),
    _rule(GET, ARTIFACTS + r"/presigned/.+", Cover.MLFLOW),
    # -- models: logged models and the registry --------------------------------------------------
    _rule(READ_WRITE, V2 + r"/logged-models(?:/.+)?", Cover.MLFLOW),
    _rule(GET, V2 + r"/registered-models/search", Cover.MLFLOW_FILTER),
    _rule(POST, V2 + r"/registered-models/(?:create|rename)", Cover.NAMESPACE),
    _rule(READ_WRITE, V2 + r"/(?:registered-models|model-versions)/[a-z-]+", Cover.MLFLOW),
    # -- traces and evaluation datasets ----------------------------------------------------------
    _rule(READ_WRITE, V2 + r"/traces(?:/.+)?", Cover.MLFLOW),
    _rule(READ_WRITE, V3 + r"/traces(?:/.+)?", Cover.MLFLOW),
    _rule(GET, r"/(?:ajax-)?api/[23]\.0/mlflow/get-trace-artifact", Cover.MLFLOW),
    _deny(
        V2 + r"/(?:get-online-trace-details|unified-traces)",
        NOT_OFFERED.format("Databricks trace views"),
    ),
    _rule(POST, r"/v1/traces", Cover.MLFLOW),
    _rule(READ_WRITE, V3 + r"/datasets(?:/.+)?", Cover.MLFLOW),
    _rule(frozenset({"GET", "POST"}), r"/graphql", Cover.MLFLOW_FILTER),
    # -- refused, with the reason -------------------------------------------------------------
    _deny(V2 + r"/users(?:/.*)?", HUB_ACCOUNTS),
    _deny(V3 + r"/users/(?:permissions|roles)(?:/.*)?", HUB_SHARING),
    _deny(V3 + r"/roles(?:/.*)?", HUB_SHARING),
    _deny(V3 + r"/workspaces(?:/.*)?", NOT_OFFERED.format("workspaces")),
    _deny(
        r"(?:/gateway/.*|" + V2 + r"/gateway-proxy|" + V3 + r"/gateway(?:/.*)?)",
        NOT_OFFERED.format("the AI gateway, which holds model provider keys"),
    ),
    _deny(V2 + r"/webhooks(?:/.*)?", NOT_OFFERED.format("webhooks, which call other addresses")),
    _deny(r"/ajax-api/3\.0/jobs(?:/.*)?", NOT_OFFERED.format("server jobs")),
    _deny(V3 + r"/jobs(?:/.*)?", NOT_OFFERED.format("server jobs")),
    _deny(V3 + r"/ui-telemetry", "werkhub sends no telemetry."),
    _deny(
        V3 + r"/(?:assistant|mcp-servers|prompt-optimization|scorers?|genai|issues|"
        r"review-queues|label-schemas|demo)(?:/.*)?",
        NOT_OFFERED.format("GenAI assistants, scorers, reviews and demo data"),
    ),
)

UNKNOWN = "werkhub's MLflow gateway passes only MLflow routes on its allow-list; not {} {}."


def classify(method: str, path: str) -> Rule | None:
    """The first rule for ``method`` (HEAD counts as GET) and ``path`` below the prefix."""
    method = "GET" if method == "HEAD" else method
    path = path or "/"
    return next((rule for rule in RULES if rule.matches(method, path)), None)


def refusal(method: str, path: str) -> tuple[int, str] | None:
    """None if the route is passed on, else (status, message for a person)."""
    rule = classify(method, path)
    if rule is None:
        return 404, UNKNOWN.format(method, path or "/")
    if rule.cover is Cover.DENIED:
        return 403, rule.why
    return None


# -- experiment name spaces --------------------------------------------------------------------

#: request fields that name an experiment, per route (proto field name and JSON name)
NAME_FIELDS = {"create": ("name",), "update": ("new_name", "newName")}


def namespace_of(name: str) -> str | None:
    """The user or group that owns ``name`` ("ann/x" -> "ann"), compared as MLflow users
    would read it (Unicode compatibility forms, case, spaces); None if it has none."""
    head, slash, _ = name.partition("/")
    key = unicodedata.normalize("NFKC", head).strip().casefold()
    return key if slash and key else None


def may_use_name(name: str, user: str, groups: list[str], admin: bool) -> bool:
    space = namespace_of(name)
    if space is None or admin:
        return True
    own = {unicodedata.normalize("NFKC", n).strip().casefold() for n in (user, *groups)}
    return space in own


def namespace_refusal(name: str, user: str) -> str:
    space = name.partition("/")[0].strip()
    return (
        f"Experiment names that begin with '{space}/' belong to the user or group "
        f"'{space}'; only they can create or rename experiments there. Name yours "
        f"'{user}/...' (or '<group>/...' for a hub group you are in)."
    )


class BadBody(Invalid, ValueError):
    """A create or rename request whose body the gateway cannot read as MLflow would."""


def request_fields(body: bytes) -> dict[str, object]:
    """A create, rename or restore body read the way MLflow's handlers read it: a JSON
    object (older clients double-encode it as a JSON string); an empty body is {}."""
    try:
        data = json.loads(body) if body.strip() else {}
        if isinstance(data, str):
            data = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody("The request body is not JSON.") from exc
    if not isinstance(data, dict):
        raise BadBody("The request body must be a JSON object.")
    return data


def _strings(data: dict[str, object], fields: tuple[str, ...]) -> list[str]:
    found = []
    for field in fields:  # MLflow accepts a proto field by its name and its JSON name
        value = data.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadBody(f"'{field}' must be a string.")
        found.append(value)
    return found


def requested_names(action: str, data: dict[str, object]) -> list[str]:
    """The experiment names a create or rename request asks for."""
    return _strings(data, NAME_FIELDS.get(action, ()))


def requested_experiment(data: dict[str, object]) -> str | None:
    ids = set(_strings(data, ("experiment_id", "experimentId")))
    if len(ids) > 1:
        raise BadBody("Send the experiment id once.")
    return ids.pop() if ids else None


def experiment_action(path: str) -> str | None:
    """'create', 'update' or 'restore' for the experiment routes that name experiments."""
    match = re.fullmatch(V2 + r"/experiments/(create|update|restore)", path)
    return match[1] if match else None


# -- registered model name spaces ----------------------------------------------------------

#: what separates the owning user or group from the rest of a registered model's name
MODEL_SEPARATOR = "~"
#: request fields that name a registered model, per route (proto field name and JSON name)
MODEL_NAME_FIELDS = {"create": ("name",), "rename": ("new_name", "newName")}


def model_namespace_of(name: str) -> str | None:
    """The user or group that owns the model ``name`` ("ann~x" -> "ann"), read as for
    experiments (a full-width tilde counts too); None if it has none."""
    head, sep, _ = unicodedata.normalize("NFKC", name).partition(MODEL_SEPARATOR)
    key = head.strip().casefold()
    return key if sep and key else None


def may_use_model_name(name: str, user: str, groups: list[str], admin: bool) -> bool:
    space = model_namespace_of(name)
    if space is None or admin:
        return True
    own = {unicodedata.normalize("NFKC", n).strip().casefold() for n in (user, *groups)}
    return space in own


def model_namespace_refusal(name: str, user: str) -> str:
    space = unicodedata.normalize("NFKC", name).partition(MODEL_SEPARATOR)[0].strip()
    return (
        f"Registered model names that begin with '{space}~' belong to the user or group "
        f"'{space}'; only they can create or rename models there. Name yours "
        f"'{user}~...' (or '<group>~...' for a hub group you are in)."
    )


def model_action(path: str) -> str | None:
    """'create', 'rename' or 'delete' for the registry routes that set or free a name."""
    match = re.fullmatch(V2 + r"/registered-models/(create|rename|delete)", path)
    return match[1] if match else None


def requested_model_names(action: str, data: dict[str, object]) -> list[str]:
    """The registered model names a create or rename request asks for."""
    return _strings(data, MODEL_NAME_FIELDS.get(action, ()))


def model_named(data: dict[str, object]) -> str | None:
    """The existing model a rename or delete request is about."""
    names = _strings(data, ("name",))
    return names[0] if names else None
