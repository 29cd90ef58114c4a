"""Storage of endpoints, their tokens, figures and request logs: every operation is one
transaction; a refused request writes nothing.

Who sees what: an endpoint's owner and admins see and change it; members of the groups it
is shared with see it and may call it; anyone else gets 404, as if it did not exist.
Endpoint tokens are kept as SHA-256 digests only; the token itself is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from werkhub.db import transaction
from werkhub.errors import Conflict, NotFound, TooMany
from werkhub.serving.spec import LOG_KEEP
from werkhub.serving.tables import endpoint_minutes, endpoint_requests, endpoint_tokens, endpoints

#: endpoint tokens start with this, then the token's id, then the secret
TOKEN_PREFIX = "wep_"


@dataclass(frozen=True)
class Viewer:
    name: str
    admin: bool = False
    groups: tuple[str, ...] = ()

    def sees(self, row: dict[str, Any]) -> bool:
        return (
            self.admin or row["owner"] == self.name or bool(set(row["groups"]) & set(self.groups))
        )

    def manages(self, row: dict[str, Any]) -> bool:
        return self.admin or row["owner"] == self.name


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def token_id(token: str) -> int | None:
    """The id in ``wep_<id>_<secret>``, or None for anything else."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    head, _, rest = token[len(TOKEN_PREFIX) :].partition("_")
    if not rest or not head.isdigit() or len(head) > 12:
        return None
    return int(head)


class EndpointStore:
    def __init__(self, writer: Engine, reader: Engine) -> None:
        self.writer, self.reader = writer, reader

    def _write(self) -> AbstractContextManager[Connection]:
        return transaction(self.writer)

    # endpoints ---------------------------------------------------------------------
    def create(self, row: dict[str, Any], max_per_owner: int) -> dict[str, Any]:
        now = time.time()
        values = {**row, "created": now, "updated": now, "reason": "", "log_tail": ""}
        try:
            with self._write() as conn:
                count = conn.execute(
                    select(func.count()).where(endpoints.c.owner == row["owner"])
                ).scalar_one()
                if count >= max_per_owner:
                    raise TooMany(
                        f"{row['owner']} has {count} endpoints, the most allowed "
                        f"(serving.max_endpoints_per_user); delete one first"
                    )
                values["id"] = conn.execute(
                    insert(endpoints).returning(endpoints.c.id), values
                ).scalar_one()
        except IntegrityError:
            raise Conflict(
                f"you already have an endpoint named '{row['name']}'", field="name"
            ) from None
        return values

    def all(self) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return [dict(r) for r in conn.execute(select(endpoints)).mappings()]

    def by_id(self, endpoint_id: int) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(endpoints).where(endpoints.c.id == endpoint_id)).mappings()
            found = row.first()
        return dict(found) if found else None

    def find(self, owner: str, name: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            found = (
                conn.execute(
                    select(endpoints).where(
                        and_(endpoints.c.owner == owner, endpoints.c.name == name)
                    )
                )
                .mappings()
                .first()
            )
        return dict(found) if found else None

    def visible(self, viewer: Viewer, owner: str, name: str) -> dict[str, Any]:
        """The endpoint if ``viewer`` may see it, else NotFound (also for others')."""
        row = self.find(owner, name)
        if row is None or not viewer.sees(row):
            raise NotFound(f"No endpoint '{name}' of {owner} (or it is not shared with you).")
        return row

    def managed(self, viewer: Viewer, owner: str, name: str) -> dict[str, Any]:
        row = self.visible(viewer, owner, name)
        if not viewer.manages(row):
            raise NotFound(f"No endpoint '{name}' of {owner} that you may change.")
        return row

    def listing(self, viewer: Viewer) -> list[dict[str, Any]]:
        return sorted(
            (r for r in self.all() if viewer.sees(r)), key=lambda r: (r["owner"], r["name"])
        )

    def update(self, endpoint_id: int, **values: Any) -> None:
        values["updated"] = time.time()
        with self._write() as conn:
            conn.execute(update(endpoints).where(endpoints.c.id == endpoint_id).values(**values))

    def remove(self, endpoint_id: int) -> None:
        with self._write() as conn:
            for table in (endpoint_tokens, endpoint_minutes, endpoint_requests):
                conn.execute(delete(table).where(table.c.endpoint_id == endpoint_id))
            conn.execute(delete(endpoints).where(endpoints.c.id == endpoint_id))

    # tokens ------------------------------------------------------------------------
    def add_token(
        self, endpoint_id: int, note: str, expires: float | None, max_tokens: int = 50
    ) -> tuple[dict[str, Any], str]:
        """A new token; returns its row and the token itself (shown once)."""
        secret = new_secret()
        now = time.time()
        with self._write() as conn:
            live = conn.execute(
                select(func.count()).where(
                    and_(
                        endpoint_tokens.c.endpoint_id == endpoint_id,
                        endpoint_tokens.c.revoked.is_(None),
                    )
                )
            ).scalar_one()
            if live >= max_tokens:
                raise TooMany(f"this endpoint has {live} tokens; revoke one first")
            row = {
                "endpoint_id": endpoint_id,
                "note": note,
                "digest": "",
                "created": now,
                "expires": expires,
                "revoked": None,
                "last_used": None,
            }
            row["id"] = conn.execute(
                insert(endpoint_tokens).returning(endpoint_tokens.c.id), row
            ).scalar_one()
            token = f"{TOKEN_PREFIX}{row['id']}_{secret}"
            row["digest"] = digest(token)
            conn.execute(
                update(endpoint_tokens)
                .where(endpoint_tokens.c.id == row["id"])
                .values(digest=row["digest"])
            )
        return row, token

    def tokens(self, endpoint_id: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(endpoint_tokens)
                    .where(endpoint_tokens.c.endpoint_id == endpoint_id)
                    .order_by(endpoint_tokens.c.id)
                ).mappings()
            ]

    def revoke(self, endpoint_id: int, tid: int) -> dict[str, Any]:
        with self._write() as conn:
            row = (
                conn.execute(
                    select(endpoint_tokens).where(
                        and_(
                            endpoint_tokens.c.id == tid,
                            endpoint_tokens.c.endpoint_id == endpoint_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"No token {tid} of this endpoint.")
            if row["revoked"] is None:
                conn.execute(
                    update(endpoint_tokens)
                    .where(endpoint_tokens.c.id == tid)
                    .values(revoked=time.time())
                )
        return {**dict(row), "revoked": row["revoked"] or time.time()}

    def token_row(self, tid: int) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            found = (
                conn.execute(select(endpoint_tokens).where(endpoint_tokens.c.id == tid))
                .mappings()
                .first()
            )
        return dict(found) if found else None

    def touch_tokens(self, used: dict[int, float]) -> None:
        if not used:
            return
        with self._write() as conn:
            for tid, at in used.items():
                conn.execute(
                    update(endpoint_tokens).where(endpoint_tokens.c.id == tid).values(last_used=at)
                )

    # figures and logs --------------------------------------------------------------
    def add_minutes(self, endpoint_id: int, figures: Iterable[dict[str, Any]]) -> None:
        rows = [{"endpoint_id": endpoint_id, **f} for f in figures]
        if not rows:
            return
        with self._write() as conn:
            for row in rows:
                conn.execute(
                    delete(endpoint_minutes).where(
                        and_(
                            endpoint_minutes.c.endpoint_id == endpoint_id,
                            endpoint_minutes.c.minute == row["minute"],
                        )
                    )
                )
            conn.execute(insert(endpoint_minutes), rows)

    def minutes(self, endpoint_id: int, since_minute: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(endpoint_minutes)
                    .where(
                        and_(
                            endpoint_minutes.c.endpoint_id == endpoint_id,
                            endpoint_minutes.c.minute >= since_minute,
                        )
                    )
                    .order_by(endpoint_minutes.c.minute)
                ).mappings()
            ]

    def add_logs(self, endpoint_id: int, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        with self._write() as conn:
            conn.execute(
                insert(endpoint_requests), [{"endpoint_id": endpoint_id, **e} for e in entries]
            )
            keep_from = conn.execute(
                select(endpoint_requests.c.id)
                .where(endpoint_requests.c.endpoint_id == endpoint_id)
                .order_by(endpoint_requests.c.id.desc())
                .offset(LOG_KEEP - 1)
                .limit(1)
            ).scalar()
            if keep_from is not None:
                conn.execute(
                    delete(endpoint_requests).where(
                        and_(
                            endpoint_requests.c.endpoint_id == endpoint_id,
                            endpoint_requests.c.id < keep_from,
                        )
                    )
                )

    def logs(self, endpoint_id: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(endpoint_requests)
                    .where(endpoint_requests.c.endpoint_id == endpoint_id)
                    .order_by(endpoint_requests.c.id.desc())
                    .limit(LOG_KEEP)
                ).mappings()
            ]

    def clear_logs(self, endpoint_id: int) -> None:
        with self._write() as conn:
            conn.execute(
                delete(endpoint_requests).where(endpoint_requests.c.endpoint_id == endpoint_id)
            )
