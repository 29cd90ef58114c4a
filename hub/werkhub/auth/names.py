"""The one safe pattern for user and group names, wherever a name enters werkhub.

Sign-up, single sign-on (OIDC), the hub's admin page and API, and the CLI all check
names here. A name is never rewritten to fit (no lowercasing, no Unicode folding):
``Alice`` or a Cyrillic ``\u0430lice`` would otherwise land on the account ``alice``. A
name that does not fit is refused with a message that says why.

Pure: standard library only.
"""

from __future__ import annotations

import re
from urllib.parse import quote

MAX_LENGTH = 64
#: 1-64 of a-z 0-9 . _ -, starting with a letter or digit, no "..", not ending in "."
NAME_PATTERN = r"\A(?!.*\.\.)[a-z0-9][a-z0-9._-]{0,63}(?<!\.)\Z"
NAME_RE = re.compile(NAME_PATTERN)
RULE = (
    "use 1-64 lowercase letters a-z, digits, '.', '_' or '-', starting with a letter "
    "or digit, without '..' and not ending in '.'"
)


def name_problem(name: object, kind: str = "user") -> str | None:
    """Why ``name`` is not a valid user (or group) name, or None when it is."""
    if not isinstance(name, str) or not name:
        return f"a {kind} name is required"
    shown = ascii(name)[1:-1] if not name.isascii() else name
    if len(name) > MAX_LENGTH:
        return f"the {kind} name '{shown[:80]}' is longer than {MAX_LENGTH} characters"
    if NAME_RE.fullmatch(name):
        return None
    if not name.isascii():
        return (
            f"'{shown}' is not a valid {kind} name: it contains characters outside a-z, "
            f"0-9, '.', '_', '-' (look-alike letters are refused); {RULE}"
        )
    if name.lower() != name and NAME_RE.fullmatch(name.lower()):
        return f"'{name}' is not a valid {kind} name: use lowercase letters only; {RULE}"
    return f"'{name}' is not a valid {kind} name: {RULE}"


def is_valid(name: object) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def url_part(name: str) -> str:
    """``name`` as one URL path segment (every reserved character escaped)."""
    return quote(name, safe="")
