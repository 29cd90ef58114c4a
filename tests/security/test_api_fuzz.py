"""Property-based tests of every operation of the werkhub service (schemathesis).

The cases come from the service's own OpenAPI document, valid and invalid ones (wrong
types, out-of-range numbers, huge ids, odd dates and strings), and go to a real
``werkhub up`` through the hub's proxy, once as an administrator and once as a normal user.
Whatever a case holds, the service must answer it without a server error (5xx).

The budget (``WERKHUB_FUZZ_EXAMPLES`` per operation, default 60) and a fixed seed
(``derandomize``) keep the run reproducible and to about two minutes on two cores.
The hub is this module's own: fuzzed bookings and jobs must not reach other tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error

from tests.support.hub import Werkhub, make_werkhub
from werkhub.service.app import create_app

pytestmark = pytest.mark.hub
OPENAPI = "/services/werkhub/api/openapi.json"
EXAMPLES = int(os.environ.get("WERKHUB_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    hub = make_werkhub(tmp_path_factory.mktemp("fuzz"))
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def callers(fuzz_hub: Werkhub) -> dict[str, str]:
    """Hub API tokens of an administrator and of a normal user."""
    tokens = {}
    with fuzz_hub.admin() as api:
        for name, admin in (("fz-admin", True), ("fz-user", False)):
            reply = api.post(f"/hub/api/users/{name}", json={"admin": admin})
            assert reply.status_code in (201, 409), reply.text
            reply = api.post(f"/hub/api/users/{name}/tokens", json={"note": "fuzz"})
            assert reply.status_code == 201, reply.text
            tokens[name] = reply.json()["token"]
    with fuzz_hub.client(tokens["fz-admin"]) as api:
        assert api.get("/services/werkhub/api/me").json()["admin"] is True
    return tokens


def documented_operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from the service's app itself (for test ids)."""
    paths = create_app("/services/werkhub").openapi()["paths"]
    return sorted((method.upper(), path) for path, ops in paths.items() for method in ops)


OPERATIONS = documented_operations()


@pytest.fixture(scope="module")
def api_schema(fuzz_hub: Werkhub) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running service serves it."""
    return schemathesis.openapi.from_url(fuzz_hub.url + OPENAPI, timeout=30)


def test_the_served_document_lists_every_operation(api_schema: schemathesis.BaseSchema) -> None:
    paths = api_schema.raw_schema["paths"]
    served = sorted((m.upper(), p) for p, ops in paths.items() for m in ops)
    assert served == OPERATIONS
    assert len(served) >= 48


def cases(operation: APIOperation) -> st.SearchStrategy[schemathesis.Case]:
    """Valid and invalid cases of one operation (invalid ones only where it has inputs)."""
    valid = operation.as_strategy(GenerationMode.POSITIVE)
    has_inputs = any(
        (operation.path_parameters, operation.query, operation.headers, list(operation.body))
    )
    if not has_inputs:
        return valid
    return st.one_of(valid, operation.as_strategy(GenerationMode.NEGATIVE))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(
    api_schema: schemathesis.BaseSchema,
    fuzz_hub: Werkhub,
    callers: dict[str, str],
    method: str,
    path: str,
) -> None:
    operation = api_schema[path][method]

    @given(case=cases(operation))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def each(case: schemathesis.Case) -> None:
        for token in callers.values():
            case.call_and_validate(
                base_url=fuzz_hub.url,
                headers={"Authorization": f"token {token}"},
                checks=[not_a_server_error],
                timeout=30,
            )

    each()
