"""Errors of the job store and scheduler: each carries the HTTP status the API answers."""

from __future__ import annotations


class JobError(Exception):
    """A refused request: ``status`` is the HTTP status, ``field`` what was wrong."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(JobError):
    status = 404


class Conflict(JobError):
    status = 409


class Forbidden(JobError):
    status = 403


class QueueFull(JobError):
    """The owner has as many runs waiting as one person may queue."""

    status = 429
