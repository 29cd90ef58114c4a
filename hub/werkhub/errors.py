"""The errors of werkhub: one base, :class:`WerkhubError`, and a few generic kinds.

Every exception class werkhub defines derives from :class:`WerkhubError` (most through
one of the kinds below), keeping the builtin it had where callers catch that builtin
(``class SpecError(Invalid, ValueError)``). Each error carries

* ``status``: the HTTP status a request that ends in it answers (400 unless the class
  says otherwise); the service maps it in one place, :mod:`werkhub.service.errors`,
  so a router may simply let a ``WerkhubError`` propagate;
* a message a person understands (``str(error)``; ``message`` where it was given);
* ``field``: optionally, the dotted path of the request field that was wrong.

Pure: imports nothing but the standard library, so the pure rules may raise these.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "Misconfigured",
    "NotFound",
    "Relayed",
    "TooMany",
    "Unavailable",
    "Upstream",
    "WerkhubError",
    "answer",
]


class WerkhubError(Exception):
    """Something werkhub refuses or cannot do; the message says what and, where it can,
    what to do instead."""

    #: the HTTP status a request that ends in this error answers
    status: int = 400
    #: whether the message may be shown to the caller; when False the service answers
    #: a generic message and logs this one (messages naming server paths or settings)
    public: ClassVar[bool] = True
    message: str = ""
    field: str | None = None

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(WerkhubError):
    """A request, definition or file breaks a rule (``field`` says where)."""

    status = 422


class Forbidden(WerkhubError):
    """The caller may not do this."""

    status = 403


class NotFound(WerkhubError):
    """Nothing with that name or id is visible to the caller."""

    status = 404


class Conflict(WerkhubError):
    """The request collides with the current state (taken, changed meanwhile)."""

    status = 409


class TooMany(WerkhubError):
    """The caller has used up an allowance; trying again later may work."""

    status = 429


class Misconfigured(WerkhubError):
    """This installation is set up wrong (configuration, state folder, plugins): an
    administrator has to act. Its message names server paths and settings, so callers of
    the API get a generic answer and the service log gets the message."""

    status = 500
    public = False


class Upstream(WerkhubError):
    """A service or program werkhub relies on (MLflow, the container engine) refused or
    failed."""

    status = 502


class Unavailable(WerkhubError):
    """Something werkhub needs is not available here now (NVML, the sandbox)."""

    status = 503


class Relayed(WerkhubError):
    """An error answer of another API passed on as it came: its ``status`` and
    ``detail``."""

    detail: str = ""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


#: what the caller of the API reads when an error's message is not ``public``
WITHHELD = "werkhub is not set up right here; an administrator finds the reason in its log"


def answer(error: WerkhubError) -> tuple[int, dict[str, str]]:
    """The HTTP status and JSON body (``{"detail": ..., "field": ...}``, ``field`` only
    when known) that ``error`` answers; 500 where its status is not an error status."""
    status = error.status if 400 <= error.status <= 599 else 500
    body = {"detail": str(error) if error.public else WITHHELD}
    if error.field and error.public:
        body["field"] = error.field
    return status, body
