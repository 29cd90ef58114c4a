"""Password store of the native login: scrypt hashes and sign-up approval in SQLite.

Plain-text passwords are never written anywhere; the hub's own database keeps
users, admin flags and groups, this store only answers "is this password right"
and "has an admin approved this sign-up".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class UserStoreError(ValueError):
    """A request the store refuses, with a message for the person who made it."""


def check_username(name: str) -> str:
    if not USERNAME_RE.match(name):
        raise UserStoreError(
            f"'{name}' is not a valid user name: use 1-64 lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    params = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${params}${salt_b64}${digest_b64}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(got, base64.b64decode(digest))


def generate_password() -> str:
    return secrets.token_urlsafe(15)


@dataclass(frozen=True)
class StoredUser:
    name: str
    approved: bool
    created: float


class UserStore:
    def __init__(self, path: str | Path, min_password_length: int = 10) -> None:
        self.path = Path(path)
        self.min_password_length = min_password_length
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL,"
                " approved INTEGER NOT NULL, created REAL NOT NULL)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    def check_password_strength(self, name: str, password: str) -> None:
        if len(password) < self.min_password_length:
            raise UserStoreError(
                f"The password must have at least {self.min_password_length} characters."
            )
        if password.lower() == name.lower():
            raise UserStoreError("The password must not be the user name.")

    def set_password(self, name: str, password: str, *, approved: bool) -> None:
        """Create or replace a user's password in one transaction."""
        check_username(name)
        self.check_password_strength(name, password)
        with self._connect() as db:
            db.execute(
                "INSERT INTO users (name, password, approved, created) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET password=excluded.password,"
                " approved=MAX(users.approved, excluded.approved)",
                (name, hash_password(password), int(approved), time.time()),
            )

    def request_signup(self, name: str, password: str, *, approved: bool = False) -> None:
        check_username(name)
        self.check_password_strength(name, password)
        with self._connect() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise UserStoreError(f"The name '{name}' is taken; choose another one.")
            db.execute(
                "INSERT INTO users (name, password, approved, created) VALUES (?, ?, ?, ?)",
                (name, hash_password(password), int(approved), time.time()),
            )

    def verify(self, name: str, password: str) -> bool:
        """True only for an approved user with the right password."""
        with self._connect() as db:
            row = db.execute(
                "SELECT password, approved FROM users WHERE name=?", (name,)
            ).fetchone()
        if row is None:
            # spend the same time as a real check so names cannot be probed by timing
            verify_password(password, _dummy_hash())
            return False
        return bool(row[1]) and verify_password(password, row[0])

    def get(self, name: str) -> StoredUser | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT name, approved, created FROM users WHERE name=?", (name,)
            ).fetchone()
        return StoredUser(row[0], bool(row[1]), row[2]) if row else None

    def list(self, *, pending_only: bool = False) -> list[StoredUser]:
        query = "SELECT name, approved, created FROM users"
        if pending_only:
            query += " WHERE approved=0"
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created").fetchall()
        return [StoredUser(r[0], bool(r[1]), r[2]) for r in rows]

    def approve(self, name: str) -> None:
        with self._connect() as db:
            if db.execute("UPDATE users SET approved=1 WHERE name=?", (name,)).rowcount == 0:
                raise UserStoreError(f"No sign-up or user named '{name}'.")

    def remove(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount > 0

    def has_users(self) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None


@cache
def _dummy_hash() -> str:
    return hash_password("not-a-real-password")
