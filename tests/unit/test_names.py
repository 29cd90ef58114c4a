"""The one name rule (werkhub.auth.names): what passes, what is refused and why."""

from __future__ import annotations

import pytest

from werkhub.auth.names import MAX_LENGTH, is_valid, name_problem, url_part
from werkhub.auth.userstore import UserStoreError, check_username

GOOD = ["alice", "a", "0", "bob.smith", "team_7", "x-ray", "a.b.c", "a" * MAX_LENGTH]
BAD = [
    "",
    "alice?x",
    "alice/x",
    "../alice",
    "a..b",
    "..",
    ".alice",
    "alice.",
    "-alice",
    "_alice",
    "al ice",
    " alice",
    "alice\n",
    "alice%3Fx",
    "alice#x",
    "alice&admin=1",
    "Alice",
    "ALICE",
    "\u0430lice",  # Cyrillic a
    "alic\u0435",  # Cyrillic e
    "\uff41lice",  # fullwidth a
    "al\u200bice",  # zero-width space
    "alic\u00e9",  # e with acute
    "a" * (MAX_LENGTH + 1),
    "~alice~1700000000",  # the tombstone of a deleted account
]


@pytest.mark.parametrize("name", GOOD)
def test_valid_names(name: str) -> None:
    assert is_valid(name) and name_problem(name) is None
    assert check_username(name) == name


@pytest.mark.parametrize("name", BAD)
def test_refused_names_say_why(name: str) -> None:
    assert not is_valid(name)
    problem = name_problem(name)
    assert problem
    with pytest.raises(UserStoreError, match="name"):
        check_username(name)


def test_messages_name_the_problem() -> None:
    assert "lowercase" in (name_problem("Alice") or "")
    assert "look-alike" in (name_problem("\u0430lice") or "")
    # the message shows a look-alike escaped, so a person sees it is not "alice"
    assert "\\u0430lice" in (name_problem("\u0430lice") or "")
    assert "longer than 64" in (name_problem("a" * 65) or "")
    assert "required" in (name_problem("") or "")
    assert "group name" in (name_problem("Quality Team", "group") or "")


def test_non_strings_are_refused() -> None:
    assert not is_valid(None) and not is_valid(7)
    assert name_problem(None) == "a user name is required"


def test_url_part_escapes_every_reserved_character() -> None:
    assert url_part("alice") == "alice"
    assert url_part("alice?x") == "alice%3Fx"
    assert url_part("a/b") == "a%2Fb"
    assert url_part("50%") == "50%25"
    assert url_part("a#b&c=d") == "a%23b%26c%3Dd"
    assert url_part("\u0430") == "%D0%B0"
