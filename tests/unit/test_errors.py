"""One error hierarchy: every exception werkhub defines is a WerkhubError, and the service
maps them to HTTP answers in one place (werkhub.service.errors)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import werkhub
from werkhub.booking.ledger import LedgerError
from werkhub.booking.ledger import NotFound as BookingNotFound
from werkhub.errors import WITHHELD, Invalid, Misconfigured, Relayed, WerkhubError, answer
from werkhub.service.errors import install_error_handlers

# files that JupyterHub, Jupyter Server and alembic execute, not modules to import
NOT_MODULES = ("werkhub.app.jupyter_config", "werkhub.db.env")


def werkhub_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(werkhub.__path__, "werkhub."):
        if not info.name.startswith(NOT_MODULES) and not info.name.endswith(".__main__"):
            names.append(info.name)
    return names


def test_every_exception_werkhub_defines_is_a_werkhub_error() -> None:
    strays = []
    for name in werkhub_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if not issubclass(cls, WerkhubError):
                strays.append(f"{name}.{cls.__qualname__}")
    assert strays == []


def test_answer_carries_status_message_and_field() -> None:
    assert answer(Invalid("n_train: must be at least 40", field="n_train")) == (
        422,
        {"detail": "n_train: must be at least 40", "field": "n_train"},
    )
    assert answer(Relayed(409, "taken")) == (409, {"detail": "taken"})
    # a message naming server paths is not shown to API callers
    status, body = answer(Misconfigured("/srv/werkhub/.werkhub/secrets is world-readable"))
    assert status == 500 and body == {"detail": WITHHELD}


def test_an_error_status_outside_4xx_5xx_answers_500() -> None:
    assert answer(Relayed(302, "moved"))[0] == 500


@pytest.mark.parametrize(
    ("kind", "status"), [("invalid", 422), ("conflict", 409), ("policy", 403), ("state", 409)]
)
def test_ledger_refusals_keep_their_status(kind: str, status: int) -> None:
    error = LedgerError(kind, "no")
    assert isinstance(error, WerkhubError) and isinstance(error, ValueError)
    assert error.status == status


def test_the_service_maps_errors_in_one_place() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/ledger")
    def ledger() -> None:
        raise LedgerError("conflict", "unit taken", free=0)

    @app.get("/missing")
    def missing() -> None:
        raise BookingNotFound("no booking 7")

    @app.get("/hidden")
    def hidden() -> None:
        raise Misconfigured("/etc/werkhub.yaml: bad")

    with TestClient(app) as client:
        reply = client.get("/ledger")
        assert reply.status_code == 409 and reply.json() == {"detail": "unit taken", "free": 0}
        reply = client.get("/missing")
        assert reply.status_code == 404 and reply.json() == {"detail": "no booking 7"}
        reply = client.get("/hidden")
        assert reply.status_code == 500 and reply.json() == {"detail": WITHHELD}
        reply = client.get("/nowhere")
        assert reply.status_code == 404 and "/nowhere" in reply.json()["detail"]
