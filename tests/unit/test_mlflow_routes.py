"""The gateway's MLflow allow-list is complete and every stated cover is real.

The installed MLflow builds its basic-auth server app (Flask url_map plus the native
FastAPI routes) in a subprocess, under the static prefix werkhub uses, and reports for
each route what its own permission layer decides for a non-admin. Every route must be
classified by an explicit rule in ``werkhub.tracking.routes`` (a new MLflow route fails
here until someone classifies it), and every allowing rule must be backed by MLflow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from werkhub.tracking.routes import (
    RULES,
    Cover,
    classify,
    may_use_model_name,
    model_action,
    model_namespace_of,
    refusal,
    requested_model_names,
)

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/services/mlflow"
SAMPLES = {"path": "1/0123456789abcdef/artifacts/model/MLmodel", "model_id": "m-0123abcd"}


def sample(template: str) -> str:
    """A concrete path for a Flask (``<path:x>``) or FastAPI (``{x:path}``) template."""

    def value(match: re.Match[str]) -> str:
        parts = (match[1] or match[2]).split(":")
        if "path" in parts:
            return SAMPLES["path"]
        names = [p for p in parts if p not in ("int", "string", "float", "uuid")]
        return SAMPLES.get(names[0], "x1")

    return re.sub(r"<([^>]+)>|\{([^}]+)\}", value, template)


def probe() -> None:  # pragma: no cover - runs in the subprocess
    """Print [method, path template, sample path, MLflow's decision] for every route."""
    from flask import request
    from mlflow.server import app as flask_app
    from mlflow.server import auth
    from starlette.routing import Mount

    fastapi_app = auth.create_app()
    rows = []

    def decide_flask() -> str:
        if auth.is_unprotected_route(request.path):
            return "public"
        validator = auth._find_validator(request)
        if validator is not None:
            if validator.__name__ == "<lambda>":  # lambda: True / lambda: False
                return "signed-in" if validator() else "deny"
            if validator is auth._allow_authenticated:
                return "signed-in"
            return "validator:" + validator.__name__
        if auth._is_proxy_artifact_path(request.path):
            found = auth._get_proxy_artifact_validator(request.method, request.view_args)
            return "validator:" + found.__name__ if found else "deny"
        if auth._authorized_outside_before_request(request):
            return "filter"
        return "deny"  # MLFLOW_BASIC_AUTH_FAIL_CLOSED

    for rule in flask_app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = sample(rule.rule)
            with flask_app.test_request_context(path, method=method):
                rows.append(["flask", method, rule.rule, path, decide_flask()])

    def flat(routes):
        for route in routes:
            if hasattr(route, "effective_candidates"):
                yield from flat(route.effective_candidates())
            elif not isinstance(route, Mount):
                yield route

    for route in flat(fastapi_app.routes):
        for method in sorted(set(route.methods or ()) - {"HEAD", "OPTIONS"}):
            path = sample(route.path)
            if auth.is_unprotected_route(path):
                decision = "public"
            elif (found := auth._find_fastapi_validator(path, method)) is not None:
                decision = "validator:" + getattr(found, "__name__", "fastapi")
            else:
                decision = "deny"
            rows.append(["fastapi", method, route.path, path, decision])
    print("ROUTES " + json.dumps(rows))


@pytest.fixture(scope="module")
def routes() -> list[list[str]]:
    folder = Path(tempfile.mkdtemp(prefix="mlflow-routes-"))
    ini = folder / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\nadmin_username = probe-admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    env = {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_USERNAME": "probe-admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": "p" * 24,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "route-probe",
        "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_STATIC_PREFIX": PREFIX,
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{folder / 'mlflow.db'}",
        "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(folder / "artifacts"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from tests.unit.test_mlflow_routes import probe; probe()"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("ROUTES ")), None)
    assert done.returncode == 0 and line, done.stderr[-3000:]
    return json.loads(line.removeprefix("ROUTES "))


def below_prefix(path: str) -> str | None:
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return path[len(PREFIX) :] or "/"
    return None


#: what MLflow must decide for a non-admin on a route the gateway allows with this cover
EXPECTED = {
    Cover.MLFLOW: lambda d: d.startswith("validator:"),
    Cover.NAMESPACE: lambda d: d.startswith("validator:"),
    Cover.MLFLOW_FILTER: lambda d: d == "filter",
    Cover.SIGNED_IN: lambda d: d in ("signed-in", "public"),
    Cover.PUBLIC: lambda d: d == "public",
}


def test_enumeration_sees_every_route_family(routes: list[list[str]]) -> None:
    """Guard the probe itself: it found the Flask app, the handlers and FastAPI routes."""
    kinds = Counter(row[0] for row in routes)
    assert kinds["flask"] > 300 and kinds["fastapi"] > 20, kinds
    paths = {row[2] for row in routes}
    for expected in (
        f"{PREFIX}/graphql",
        f"{PREFIX}/ajax-api/2.0/mlflow/experiments/create",
        f"{PREFIX}/api/2.0/mlflow/logged-models/<model_id>",
        f"{PREFIX}/api/3.0/mlflow/traces/search",
        f"{PREFIX}/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>",
        f"{PREFIX}/gateway/{{endpoint_name}}/mlflow/invocations",
        f"{PREFIX}/static-files/<path:path>",
    ):
        assert expected in paths, expected


def test_every_route_is_classified_explicitly(routes: list[list[str]]) -> None:
    unclassified = []
    for _kind, method, template, path, _decision in routes:
        below = below_prefix(path)
        if below is None:
            # served outside the prefix (MLflow's native artifact router): the gateway
            # forwards nothing outside its prefix, so these are unreachable through it
            outside = ("/build/", "/signup", "/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/")
            assert template.startswith(outside), template
            continue
        if classify(method, below) is None:
            unclassified.append(f"{method} {template}")
    assert not unclassified, "routes missing from werkhub.tracking.routes.RULES:\n" + "\n".join(
        sorted(unclassified)
    )


def test_every_allowed_route_is_covered_as_stated(routes: list[list[str]]) -> None:
    wrong = []
    for _kind, method, template, path, decision in routes:
        below = below_prefix(path)
        rule = classify(method, below) if below is not None else None
        if rule is None or rule.cover is Cover.DENIED:
            continue
        if not EXPECTED[rule.cover](decision):
            wrong.append(f"{method} {template}: stated {rule.cover.name}, MLflow: {decision}")
    assert not wrong, "allowed routes without the stated cover:\n" + "\n".join(sorted(wrong))


def test_every_rule_matches_a_real_route(routes: list[list[str]]) -> None:
    """No stale rule: each one classifies at least one route of the installed MLflow."""
    used = set()
    for _kind, method, _template, path, _decision in routes:
        below = below_prefix(path)
        rule = classify(method, below) if below is not None else None
        if rule is not None:
            used.add(RULES.index(rule))
    unused = [RULES[i].pattern.pattern for i in range(len(RULES)) if i not in used]
    assert not unused, unused


def test_refusals_are_explained() -> None:
    assert refusal("GET", "/api/2.0/mlflow/experiments/get") is None
    assert refusal("HEAD", "/static-files/app.js") is None
    status, message = refusal("POST", "/api/2.0/mlflow/users/create") or (0, "")
    assert status == 403 and "managed by the hub" in message
    status, message = refusal("POST", "/ajax-api/3.0/mlflow/gateway/secrets/create") or (0, "")
    assert status == 403 and "does not offer" in message
    status, message = refusal("GET", "/api/2.0/mlflow/no-such-route") or (0, "")
    assert status == 404 and "allow-list" in message
    # odd spellings of allowed routes are not on the list: refused, never guessed at
    assert refusal("POST", "/api/2.0/mlflow//experiments/create") is not None
    assert refusal("POST", "/api/2.0/mlflow/experiments/create/") is not None
    assert refusal("OPTIONS", "/api/2.0/mlflow/experiments/search") is not None


def test_registered_model_names_are_checked_on_create_and_rename() -> None:
    for path in (
        "/api/2.0/mlflow/registered-models/create",
        "/ajax-api/2.0/mlflow/registered-models/rename",
    ):
        rule = classify("POST", path)
        assert rule is not None and rule.cover is Cover.NAMESPACE, path
    assert model_action("/api/2.0/mlflow/registered-models/create") == "create"
    assert model_action("/ajax-api/2.0/mlflow/registered-models/rename") == "rename"
    assert model_action("/api/2.0/mlflow/registered-models/delete") == "delete"
    assert model_action("/api/2.0/mlflow/registered-models/update") is None
    assert requested_model_names("rename", {"name": "a", "newName": "ann~b"}) == ["ann~b"]
    assert requested_model_names("create", {"name": "ann~b"}) == ["ann~b"]


def test_registered_model_name_spaces() -> None:
    assert model_namespace_of("ann~classifier") == "ann"
    assert model_namespace_of("ann.smith~x~y") == "ann.smith"  # user names hold '.'
    assert model_namespace_of(" ANN \uff5ex") == "ann"  # full-width tilde, case, spaces
    assert model_namespace_of("classifier") is None
    assert model_namespace_of("~x") is None
    assert may_use_model_name("ann~x", "ann", [], False)
    assert may_use_model_name("team~x", "ben", ["team"], False)
    assert not may_use_model_name("ann~x", "ben", ["team"], False)
    assert may_use_model_name("ann~x", "root", [], True)
    assert may_use_model_name("free-name", "ben", [], False)
