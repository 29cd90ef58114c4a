"""Password store of the native login: scrypt hashes, sign-up approval and one-time
invitations in SQLite.

Plain-text passwords are never written anywhere; the hub's own database keeps
users, admin flags and groups, this store only answers "is this password right",
"has an admin approved this sign-up" and "does this invitation claim that account".
An invitation code is a random secret kept only as its SHA-256: it is shown once,
expires, works once and can be revoked. Times come from :func:`now` (the seam tests
move).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from werkhub.auth.names import NAME_RE, name_problem
from werkhub.errors import Invalid

USERNAME_RE = NAME_RE
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
DAY = 86_400.0
#: how long an invitation is valid unless the admin says otherwise
INVITATION_DAYS = 7.0
MAX_INVITATION_DAYS = 90.0


def now() -> float:
    """The current time (epoch seconds); tests replace this seam."""
    return time.time()


class UserStoreError(Invalid, ValueError):
    """A request the store refuses, with a message for the person who made it."""


def check_username(name: str) -> str:
    problem = name_problem(name)
    if problem is not None:
        raise UserStoreError(problem)
    return name


def code_digest(code: str) -> str:
    """How an invitation code is stored: its SHA-256 (the code itself is random)."""
    return hashlib.sha256(code.strip().encode()).hexdigest()


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


@dataclass(frozen=True)
class Invitation:
    """An invitation as admins see it (never the code: only its digest is stored)."""

    id: int
    name: str
    created: float
    expires: float
    created_by: str
    used: float | None
    revoked: float | None

    def state(self, at: float) -> str:
        if self.used is not None:
            return "used"
        if self.revoked is not None:
            return "revoked"
        return "expired" if at >= self.expires else "active"


class UserStore:
    def __init__(self, path: str | Path, min_password_length: int = 10) -> None:
        self.path = Path(path)
        self.min_password_length = min_password_length
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL,"
                " approved INTEGER NOT NULL, created REAL NOT NULL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS invitations (id INTEGER PRIMARY KEY,"
                " name TEXT NOT NULL, code_sha256 TEXT NOT NULL UNIQUE, created REAL NOT NULL,"
                " expires REAL NOT NULL, created_by TEXT NOT NULL, used REAL, revoked REAL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS ix_invitations_name ON invitations (name)")
            # the organisation a pending sign-up asks to join (its admins approve it)
            db.execute(
                "CREATE TABLE IF NOT EXISTS signup_orgs (name TEXT PRIMARY KEY,"
                " org TEXT NOT NULL, requested REAL NOT NULL)"
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
                (name, hash_password(password), int(approved), now()),
            )

    def request_signup(
        self, name: str, password: str, *, approved: bool = False, org: str | None = None
    ) -> None:
        """A new account waiting for approval; with ``org``, the organisation it asks to
        join (that organisation's admins approve or refuse it)."""
        check_username(name)
        self.check_password_strength(name, password)
        with self._connect() as db:
            if db.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone():
                raise UserStoreError(f"The name '{name}' is taken; choose another one.")
            at = now()
            db.execute(
                "INSERT INTO users (name, password, approved, created) VALUES (?, ?, ?, ?)",
                (name, hash_password(password), int(approved), at),
            )
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))
            if org:
                db.execute(
                    "INSERT INTO signup_orgs (name, org, requested) VALUES (?, ?, ?)",
                    (name, org, at),
                )

    def org_signups(self, org: str | None = None) -> dict[str, str]:
        """Pending sign-ups that ask to join an organisation (of ``org`` only, if given):
        user name -> organisation slug."""
        query = (
            "SELECT s.name, s.org FROM signup_orgs s JOIN users u ON u.name = s.name"
            " WHERE u.approved = 0"
        )
        args: tuple[str, ...] = ()
        if org is not None:
            query, args = query + " AND s.org = ?", (org,)
        with self._connect() as db:
            return dict(db.execute(query + " ORDER BY s.requested", args).fetchall())

    def settle_signup(self, name: str, org: str, approve: bool) -> None:
        """Approve (or refuse: remove) ``name``'s pending request to join ``org``, in one
        transaction; refused when there is no such request."""
        with self._connect() as db:
            found = db.execute(
                "SELECT 1 FROM signup_orgs s JOIN users u ON u.name = s.name"
                " WHERE s.name = ? AND s.org = ? AND u.approved = 0",
                (name, org),
            ).fetchone()
            if found is None:
                raise UserStoreError(f"No pending sign-up of '{name}' for '{org}'.")
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))
            if approve:
                db.execute("UPDATE users SET approved=1 WHERE name=?", (name,))
            else:
                db.execute("DELETE FROM users WHERE name=? AND approved=0", (name,))

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
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))

    def remove(self, name: str) -> bool:
        with self._connect() as db:
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))
            return db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount > 0

    def has_users(self) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def forget(self, name: str) -> None:
        """A deleted user: drop their password and every invitation in one transaction,
        so the name can neither log in again nor be claimed with an old code."""
        with self._connect() as db:
            db.execute("DELETE FROM users WHERE name=?", (name,))
            db.execute("DELETE FROM invitations WHERE name=?", (name,))
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))

    # ---- invitations -----------------------------------------------------------------
    def invite(self, name: str, created_by: str, days: float = INVITATION_DAYS) -> str:
        """A new one-time code for the admin-created account ``name``; returned once.

        Older codes of the name are revoked and a pending self sign-up under the name is
        dropped (the invitation decides who gets the account). A name that already has a
        password is refused: its owner can log in."""
        check_username(name)
        if not 0 < days <= MAX_INVITATION_DAYS:
            raise UserStoreError(
                f"An invitation is valid for more than 0 and at most {MAX_INVITATION_DAYS:g} days."
            )
        code = secrets.token_urlsafe(24)
        at = now()
        with self._connect() as db:
            row = db.execute("SELECT approved FROM users WHERE name=?", (name,)).fetchone()
            if row is not None and row[0]:
                raise UserStoreError(
                    f"'{name}' already has a password and can log in; no invitation is needed."
                )
            db.execute("DELETE FROM users WHERE name=? AND approved=0", (name,))
            db.execute("DELETE FROM signup_orgs WHERE name=?", (name,))
            db.execute(
                "UPDATE invitations SET revoked=? WHERE name=? AND used IS NULL"
                " AND revoked IS NULL",
                (at, name),
            )
            db.execute(
                "INSERT INTO invitations (name, code_sha256, created, expires, created_by)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, code_digest(code), at, at + days * DAY, created_by),
            )
        return code

    def invitation_for(self, code: str) -> Invitation:
        """The active invitation of ``code``; refused when unknown, used, revoked or
        expired (the message does not tell which, so codes cannot be probed)."""
        with self._connect() as db:
            found = self._by_code(db, code)
        if found is None or found.state(now()) != "active":
            raise UserStoreError(
                "This invitation is not valid: it may have been used, revoked or have expired."
                " Ask an administrator for a new one."
            )
        return found

    def claim(self, code: str, name: str, password: str) -> None:
        """Use ``code`` once: give its account ``password`` and approve it, in one
        transaction. Nothing is written unless every check passes."""
        self.check_password_strength(name, password)
        digest = hash_password(password)
        with self._connect() as db:
            found = self._by_code(db, code)
            at = now()
            if found is None or found.state(at) != "active" or found.name != name:
                raise UserStoreError(
                    "This invitation is not valid: it may have been used, revoked or have"
                    " expired. Ask an administrator for a new one."
                )
            used = db.execute(
                "UPDATE invitations SET used=? WHERE id=? AND used IS NULL AND revoked IS NULL",
                (at, found.id),
            )
            if used.rowcount != 1:  # claimed by a concurrent request
                raise UserStoreError("This invitation has just been used.")
            db.execute(
                "INSERT INTO users (name, password, approved, created) VALUES (?, ?, 1, ?)"
                " ON CONFLICT(name) DO UPDATE SET password=excluded.password, approved=1",
                (name, digest, at),
            )

    def invitations(self, *, active_only: bool = False) -> list[Invitation]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {_INVITATION_COLUMNS} FROM invitations ORDER BY id")
            found = [Invitation(*row) for row in rows.fetchall()]
        at = now()
        return [i for i in found if not active_only or i.state(at) == "active"]

    def revoke_invitations(self, name: str) -> int:
        """Revoke every open invitation of ``name``; returns how many there were."""
        with self._connect() as db:
            done = db.execute(
                "UPDATE invitations SET revoked=? WHERE name=? AND used IS NULL"
                " AND revoked IS NULL",
                (now(), name),
            )
            return done.rowcount

    @staticmethod
    def _by_code(db: sqlite3.Connection, code: str) -> Invitation | None:
        if not code or len(code) > 200:
            return None
        row = db.execute(
            f"SELECT {_INVITATION_COLUMNS} FROM invitations WHERE code_sha256=?",
            (code_digest(code),),
        ).fetchone()
        return Invitation(*row) if row else None


_INVITATION_COLUMNS = "id, name, created, expires, created_by, used, revoked"


@cache
def _dummy_hash() -> str:
    return hash_password("not-a-real-password")
