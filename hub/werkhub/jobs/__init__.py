"""Scheduled notebook jobs: definitions (``spec``, ``cron``, ``params``, ``paths``), the
queue and its fairness, the store, the ``scheduler``, reports and notices, and ``run/``
(how one run is launched and executed: local, docker, kubernetes). The HTTP API is
``werkhub.service.jobs``. Submodules are imported explicitly; this package imports nothing
so that the pure modules stay light. Never imports ``werkhub.service``, ``werkhub.app`` or
``werkhub.cli``.
"""
