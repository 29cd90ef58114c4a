from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from werkhub.userstore import UserStore, UserStoreError, hash_password, verify_password


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "users.sqlite", min_password_length=10)


def test_hash_roundtrip_and_salted() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("correct horse", first)
    assert not verify_password("wrong horse", first)
    assert not verify_password("x", "garbage")


def test_signup_is_pending_until_approved(store: UserStore) -> None:
    store.request_signup("dave", "a-long-secret")
    assert not store.verify("dave", "a-long-secret")
    assert [u.name for u in store.list(pending_only=True)] == ["dave"]
    store.approve("dave")
    assert store.verify("dave", "a-long-secret")
    assert store.list(pending_only=True) == []


def test_rules_give_clear_messages(store: UserStore) -> None:
    with pytest.raises(UserStoreError, match="at least 10 characters"):
        store.request_signup("eve", "short")
    with pytest.raises(UserStoreError, match="not a valid user name"):
        store.request_signup("Eve Smith", "a-long-secret")
    with pytest.raises(UserStoreError, match="must not be the user name"):
        store.request_signup("frankfrank", "FRANKFRANK")
    store.request_signup("eve", "a-long-secret")
    with pytest.raises(UserStoreError, match="taken"):
        store.request_signup("eve", "another-secret")
    with pytest.raises(UserStoreError, match="No sign-up"):
        store.approve("nobody")


def test_set_password_replaces_and_never_unapproves(store: UserStore) -> None:
    store.set_password("gina", "first-password", approved=True)
    store.set_password("gina", "second-password", approved=False)
    assert store.verify("gina", "second-password")
    assert not store.verify("gina", "first-password")


def test_no_plain_text_on_disk(store: UserStore, tmp_path: Path) -> None:
    store.set_password("hank", "plain-text-check", approved=True)
    assert b"plain-text-check" not in (tmp_path / "users.sqlite").read_bytes()
    rows = sqlite3.connect(tmp_path / "users.sqlite").execute("SELECT password FROM users")
    assert all(r[0].startswith("scrypt$") for r in rows)
