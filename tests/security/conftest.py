"""The security battery: every attack from issue 12 against a real werkhub.

Tests here share the hub tier's session hub (one ``werkhub up`` for the battery) and may
start their own with ``fresh_werkhub`` where an attack needs other settings.
"""

from __future__ import annotations

from tests.hub.conftest import fresh_werkhub, werkhub

__all__ = ["fresh_werkhub", "werkhub"]
