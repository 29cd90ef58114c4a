"""Notebook side of werkhub: widgets, a small HTTP client for the werkhub service, and the
exercise kit of the student courses (``werkhub_widgets.coursekit``).

This package never imports the hub side; it only speaks HTTP to the service API.
"""

from werkhub_widgets.client import ServiceError, WerkhubClient

__all__ = ["ServiceError", "WerkhubClient"]
