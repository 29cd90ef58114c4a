"""GPU booking: pure rules (``ledger``, ``quota``, ``waitlist``, ``idle``), storage
(``tables``, ``rows``), the services built on them (``manager``, ``accounting``) and
``servers``-side operations the spawners call. The HTTP API is ``werkhub.service.bookings``.

May import ``werkhub.config``, ``werkhub.db``, ``werkhub.errors``; never ``werkhub.service``,
``werkhub.app`` or ``werkhub.cli``. The pure rules import no I/O framework.
"""
