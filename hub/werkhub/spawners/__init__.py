"""Spawners: thin subclasses per backend (local, docker, kubernetes) over pure builders
(``werkhub.gpus.devices``, ``werkhub.sandbox.spec``), with the booking check at spawn.
Never imports ``werkhub.service``, ``werkhub.app`` or ``werkhub.cli``."""
