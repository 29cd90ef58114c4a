"""Notebook side of werkhub: widgets and a small HTTP client for the werkhub service.

This package never imports the hub side; it only speaks HTTP to the service API.
"""

from werkhub_widgets.client import ServiceError, WerkhubClient

__all__ = ["ServiceError", "WerkhubClient"]
