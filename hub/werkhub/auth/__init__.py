"""Who someone is: the native login's user store (passwords, sign-up approval, one-time
invitations), the JupyterHub authenticators (native, single sign-on) and hub
authentication for the werkhub services (tokens and the hub's OAuth cookie); the one safe
name pattern.

Owns: accounts and names. May import ``werkhub.config``, ``werkhub.errors``,
``werkhub.http``; never ``werkhub.service``, ``werkhub.app`` or ``werkhub.cli``.
"""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    # ``authenticator_class: werkhub.auth.WerkhubAuthenticator`` (before 0.2) keeps working
    if name == "WerkhubAuthenticator":
        warnings.warn(
            "werkhub.auth.WerkhubAuthenticator moved to werkhub.auth.native."
            "WerkhubAuthenticator (or use authenticator_class 'werkhub')",
            DeprecationWarning,
            stacklevel=2,
        )
        from werkhub.auth.native import WerkhubAuthenticator

        return WerkhubAuthenticator
    raise AttributeError(f"module 'werkhub.auth' has no attribute {name!r}")
