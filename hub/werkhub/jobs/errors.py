"""Errors of the job store and scheduler: each carries the HTTP status the API answers."""

from __future__ import annotations

from werkhub.errors import WerkhubError


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
