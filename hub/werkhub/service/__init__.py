"""The werkhub service: one FastAPI app under ``/services/werkhub/``, started by the hub.

One router module per API (bookings, spawn, jobs, templates, experiments, users, pages),
the request-body guard, the API's bounds. Owns: HTTP. May import the domain packages
(``booking``, ``jobs``, ``gpus``, ``images``, ``tracking``, ``auth``, ``config``); the domain
packages never import it.
"""
