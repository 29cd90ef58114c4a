"""Notebook side of werkhub: widgets, a small HTTP client for the werkhub service, and the
exercise kit of the student courses (``werkhub_widgets.coursekit``).

One call each from a notebook: ``from werkhub_widgets import booking, gallery, jobs,
experiments, endpoints, federation``. This package never imports the hub side; it only
speaks HTTP to the service.
"""

from werkhub_widgets.booking import booking
from werkhub_widgets.client import ServiceError, WerkhubClient
from werkhub_widgets.endpoints import endpoints
from werkhub_widgets.experiments import experiments
from werkhub_widgets.federation import federation
from werkhub_widgets.gallery import gallery
from werkhub_widgets.jobs import jobs

__all__ = [
    "ServiceError",
    "WerkhubClient",
    "booking",
    "endpoints",
    "experiments",
    "federation",
    "gallery",
    "jobs",
]
