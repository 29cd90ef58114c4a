from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from werkhub.auth.userstore import UserStore, UserStoreError, hash_password, verify_password


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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The store's time seam, set to a fixed moment the test moves."""
    now = [1_000_000.0]
    monkeypatch.setattr("werkhub.auth.userstore.now", lambda: now[0])
    return now


def test_invitation_claims_once(store: UserStore, clock: list[float], tmp_path: Path) -> None:
    code = store.invite("carol", created_by="admin")
    assert code.encode() not in (tmp_path / "users.sqlite").read_bytes()  # only its hash
    assert store.invitation_for(code).name == "carol"
    with pytest.raises(UserStoreError, match="not valid"):
        store.claim(code, "mallory", "a-long-secret")  # another name: refused
    store.claim(code, "carol", "carols-secret")
    assert store.verify("carol", "carols-secret")
    with pytest.raises(UserStoreError, match="not valid"):
        store.claim(code, "carol", "someone-else-1")
    assert store.verify("carol", "carols-secret")
    assert [i.state(clock[0]) for i in store.invitations()] == ["used"]


def test_invitation_expires_by_the_seam(store: UserStore, clock: list[float]) -> None:
    code = store.invite("dora", created_by="admin", days=7)
    clock[0] += 7 * 86400 - 1
    assert store.invitation_for(code).name == "dora"
    clock[0] += 1
    with pytest.raises(UserStoreError, match="not valid"):
        store.claim(code, "dora", "a-long-secret")
    assert store.get("dora") is None
    assert store.invitations(active_only=True) == []


def test_invitation_revoked_replaced_and_forgotten(store: UserStore, clock: list[float]) -> None:
    first = store.invite("erin", created_by="admin")
    second = store.invite("erin", created_by="admin")  # replaces the first
    with pytest.raises(UserStoreError, match="not valid"):
        store.invitation_for(first)
    assert store.revoke_invitations("erin") == 1
    with pytest.raises(UserStoreError, match="not valid"):
        store.claim(second, "erin", "a-long-secret")
    third = store.invite("erin", created_by="admin")
    store.forget("erin")
    assert store.invitations() == []
    with pytest.raises(UserStoreError, match="not valid"):
        store.claim(third, "erin", "a-long-secret")


def test_invitation_rules(store: UserStore, clock: list[float]) -> None:
    with pytest.raises(UserStoreError, match="not a valid user name"):
        store.invite("Erin", created_by="admin")
    with pytest.raises(UserStoreError, match="at most 90"):
        store.invite("erin", created_by="admin", days=365)
    store.set_password("fred", "freds-password", approved=True)
    with pytest.raises(UserStoreError, match="already has a password"):
        store.invite("fred", created_by="admin")
    # a pending self sign-up under an invited name loses: the invitation decides
    store.request_signup("gwen", "attackers-pass")
    code = store.invite("gwen", created_by="admin")
    assert store.get("gwen") is None
    with pytest.raises(UserStoreError, match="at least 10"):
        store.claim(code, "gwen", "short")
    assert store.invitation_for(code).name == "gwen"  # a refused claim used nothing
    store.claim(code, "gwen", "gwens-password")
    assert not store.verify("gwen", "attackers-pass")
    for bad in ("", "x" * 500, "not-a-code"):
        with pytest.raises(UserStoreError, match="not valid"):
            store.invitation_for(bad)


def test_forget_removes_password(store: UserStore) -> None:
    store.set_password("hank", "hanks-password", approved=True)
    store.forget("hank")
    assert store.get("hank") is None and not store.verify("hank", "hanks-password")
