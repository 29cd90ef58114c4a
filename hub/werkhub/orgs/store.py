"""Storage of organisations, memberships and the groups made inside them: one transaction
per operation, a refusal writes nothing. Others' organisations answer NotFound."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from werkhub.db import transaction
from werkhub.errors import Conflict, NotFound
from werkhub.orgs.rules import Actor
from werkhub.orgs.tables import org_groups, org_guarantees, org_members, org_policies, orgs


@dataclass(frozen=True)
class Membership:
    slug: str
    admin: bool


class OrgStore:
    def __init__(self, writer: Engine, reader: Engine) -> None:
        self.writer, self.reader = writer, reader

    # reading -------------------------------------------------------------------------
    def membership(self, user: str) -> Membership | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                select(orgs.c.slug, org_members.c.admin)
                .join(orgs, orgs.c.id == org_members.c.org_id)
                .where(org_members.c.user == user)
            ).first()
        return None if row is None else Membership(row.slug, bool(row.admin))

    def actor(self, name: str, platform_admin: bool) -> Actor:
        found = self.membership(name)
        return Actor(
            name=name,
            platform_admin=platform_admin,
            org=found.slug if found else None,
            org_admin=bool(found and found.admin),
        )

    def _org(self, conn: Any, slug: str) -> dict[str, Any] | None:
        row = conn.execute(select(orgs).where(orgs.c.slug == slug)).mappings().first()
        return dict(row) if row else None

    def get(self, actor: Actor, slug: str) -> dict[str, Any]:
        """The organisation if ``actor`` may see it (NotFound otherwise, also for others')."""
        if not actor.sees(slug):
            raise NotFound(f"No organisation '{slug}'.")
        with self.reader.connect() as conn:
            found = self._org(conn, slug)
            if found is None:
                raise NotFound(f"No organisation '{slug}'.")
            found["members"] = conn.execute(
                select(func.count()).where(org_members.c.org_id == found["id"])
            ).scalar_one()
        return found

    def listing(self, actor: Actor) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            counts = dict(
                conn.execute(
                    select(org_members.c.org_id, func.count()).group_by(org_members.c.org_id)
                ).all()
            )
            rows = [dict(r) for r in conn.execute(select(orgs).order_by(orgs.c.slug)).mappings()]
        return [{**r, "members": counts.get(r["id"], 0)} for r in rows if actor.sees(r["slug"])]

    def members(self, actor: Actor, slug: str) -> list[dict[str, Any]]:
        org = self.get(actor, slug)
        with self.reader.connect() as conn:
            return [
                dict(r)
                for r in conn.execute(
                    select(org_members.c.user, org_members.c.admin, org_members.c.added)
                    .where(org_members.c.org_id == org["id"])
                    .order_by(org_members.c.user)
                ).mappings()
            ]

    def groups(self, actor: Actor, slug: str) -> list[str]:
        org = self.get(actor, slug)
        with self.reader.connect() as conn:
            return list(
                conn.execute(
                    select(org_groups.c.group)
                    .where(org_groups.c.org_id == org["id"])
                    .order_by(org_groups.c.group)
                ).scalars()
            )

    def group_org(self, group: str) -> str | None:
        """The slug of the organisation ``group`` was made in (or mirrors), or None."""
        with self.reader.connect() as conn:
            slug = conn.execute(
                select(orgs.c.slug)
                .join(org_groups, org_groups.c.org_id == orgs.c.id)
                .where(org_groups.c.group == group)
            ).scalar()
        return slug

    def org_members_of(self, slug: str) -> set[str]:
        with self.reader.connect() as conn:
            return set(
                conn.execute(
                    select(org_members.c.user)
                    .join(orgs, orgs.c.id == org_members.c.org_id)
                    .where(orgs.c.slug == slug)
                ).scalars()
            )

    def users_by_org(self) -> dict[str, str]:
        with self.reader.connect() as conn:
            return dict(
                conn.execute(
                    select(org_members.c.user, orgs.c.slug).join(
                        orgs, orgs.c.id == org_members.c.org_id
                    )
                ).all()
            )

    # writing -------------------------------------------------------------------------
    def create(self, slug: str, name: str, groups: list[str]) -> dict[str, Any]:
        """A new organisation with the hub groups that mirror it (``groups``)."""
        now = time.time()
        try:
            with transaction(self.writer) as conn:
                org_id = conn.execute(
                    insert(orgs).returning(orgs.c.id),
                    {"slug": slug, "name": name, "created": now, "updated": now},
                ).scalar_one()
                for group in groups:
                    conn.execute(
                        insert(org_groups), {"group": group, "org_id": org_id, "created": now}
                    )
        except IntegrityError:
            raise Conflict(
                f"organisation '{slug}' exists already, or one of its groups {groups} "
                "belongs to another organisation",
                field="slug",
            ) from None
        return {"id": org_id, "slug": slug, "name": name, "created": now, "updated": now}

    def change(self, slug: str, values: dict[str, Any]) -> None:
        """New display name and/or budget (only the keys given)."""
        with transaction(self.writer) as conn:
            done = conn.execute(
                update(orgs).where(orgs.c.slug == slug).values(**values, updated=time.time())
            ).rowcount
        if not done:
            raise NotFound(f"No organisation '{slug}'.")

    def remove(self, slug: str) -> tuple[list[str], list[str]]:
        """Delete the organisation; returns (its former members, its groups)."""
        with transaction(self.writer) as conn:
            org = self._org(conn, slug)
            if org is None:
                raise NotFound(f"No organisation '{slug}'.")
            members = list(
                conn.execute(
                    select(org_members.c.user).where(org_members.c.org_id == org["id"])
                ).scalars()
            )
            groups = list(
                conn.execute(
                    select(org_groups.c.group).where(org_groups.c.org_id == org["id"])
                ).scalars()
            )
            conn.execute(delete(org_policies).where(org_policies.c.org_id == org["id"]))
            conn.execute(delete(org_members).where(org_members.c.org_id == org["id"]))
            conn.execute(delete(org_groups).where(org_groups.c.org_id == org["id"]))
            conn.execute(delete(orgs).where(orgs.c.id == org["id"]))
        return members, groups

    def put_member(self, slug: str, user: str, admin: bool) -> bool:
        """Add ``user`` (or change their admin flag); True when they were added. A user of
        another organisation is refused (a user belongs to at most one)."""
        with transaction(self.writer) as conn:
            org = self._org(conn, slug)
            if org is None:
                raise NotFound(f"No organisation '{slug}'.")
            current = conn.execute(
                select(org_members.c.org_id).where(org_members.c.user == user)
            ).scalar()
            if current is not None and current != org["id"]:
                raise Conflict(
                    f"{user} belongs to another organisation; a user belongs to at most one",
                    field="user",
                )
            if current is None:
                conn.execute(
                    insert(org_members),
                    {"user": user, "org_id": org["id"], "admin": admin, "added": time.time()},
                )
                return True
            conn.execute(update(org_members).where(org_members.c.user == user).values(admin=admin))
            return False

    def drop_member(self, slug: str, user: str) -> None:
        with transaction(self.writer) as conn:
            org = self._org(conn, slug)
            if org is None:
                raise NotFound(f"No organisation '{slug}'.")
            done = conn.execute(
                delete(org_members).where(
                    and_(org_members.c.user == user, org_members.c.org_id == org["id"])
                )
            ).rowcount
            # a former member keeps no policy of the organisation
            conn.execute(
                delete(org_policies).where(
                    and_(org_policies.c.kind == "user", org_policies.c.name == user)
                )
            )
        if not done:
            raise NotFound(f"{user} is not a member of '{slug}'.")

    def add_group(self, slug: str, group: str) -> None:
        try:
            with transaction(self.writer) as conn:
                org = self._org(conn, slug)
                if org is None:
                    raise NotFound(f"No organisation '{slug}'.")
                conn.execute(
                    insert(org_groups),
                    {"group": group, "org_id": org["id"], "created": time.time()},
                )
        except IntegrityError:
            raise Conflict(f"group '{group}' exists already", field="name") from None

    def drop_group(self, slug: str, group: str) -> None:
        with transaction(self.writer) as conn:
            org = self._org(conn, slug)
            done = (
                0
                if org is None
                else conn.execute(
                    delete(org_groups).where(
                        and_(org_groups.c.group == group, org_groups.c.org_id == org["id"])
                    )
                ).rowcount
            )
        if not done:
            raise NotFound(f"No group '{group}' in organisation '{slug}'.")

    # guarantees ----------------------------------------------------------------------
    def guarantees(self, slug: str) -> dict[str, int]:
        with self.reader.connect() as conn:
            org = self._org(conn, slug)
            if org is None:
                raise NotFound(f"No organisation '{slug}'.")
            return dict(
                conn.execute(
                    select(org_guarantees.c.gpu_type, org_guarantees.c.count).where(
                        org_guarantees.c.org_id == org["id"]
                    )
                ).all()
            )

    def set_guarantees(self, slug: str, wanted: dict[str, int], sizes: dict[str, int]) -> None:
        """Replace the organisation's guarantees; all organisations' guarantees of a type
        together may not exceed the type's GPUs (``sizes``)."""
        with transaction(self.writer) as conn:
            org = self._org(conn, slug)
            if org is None:
                raise NotFound(f"No organisation '{slug}'.")
            for gpu_type, count in wanted.items():
                others = conn.execute(
                    select(func.coalesce(func.sum(org_guarantees.c.count), 0)).where(
                        and_(
                            org_guarantees.c.gpu_type == gpu_type,
                            org_guarantees.c.org_id != org["id"],
                        )
                    )
                ).scalar_one()
                if others + count > sizes.get(gpu_type, 0):
                    raise Conflict(
                        f"{gpu_type}: {others} of {sizes.get(gpu_type, 0)} GPUs are guaranteed "
                        f"to other organisations; at most {sizes.get(gpu_type, 0) - others} "
                        "are left to guarantee",
                        field=gpu_type,
                    )
            conn.execute(delete(org_guarantees).where(org_guarantees.c.org_id == org["id"]))
            rows = [
                {"org_id": org["id"], "gpu_type": t, "count": c} for t, c in wanted.items() if c
            ]
            if rows:
                conn.execute(insert(org_guarantees), rows)
