"""Errors of the job store and scheduler: each carries the HTTP status the API answers."""

from __future__ import annotations

from werkhub.errors import Invalid, WerkhubError


class JobError(WerkhubError):
    """A refused request: ``status`` is the HTTP status, ``field`` what was wrong."""


class NotFound(JobError):
    status = 404


class Conflict(JobError):
    status = 409


class Forbidden(JobError):
    status = 403


class QueueFull(JobError):
    """The owner has as many runs waiting as one person may queue."""

    status = 429


class SpecError(Invalid, ValueError):
    """A job definition breaks a rule. ``field`` is the dotted path (``schedule.cron``,
    ``parameters.epochs``), ``message`` says what is wrong and what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field)
        self.field = field
        self.message = message
