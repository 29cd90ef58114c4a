"""Booking policies an organisation's admins set for its members and groups, kept in the
database (migration 0012) and mirrored into the booking settings' ``LayeredPolicies``
after every change, so the next booking is checked against them."""

from __future__ import annotations

import time
from typing import Any, Literal

from sqlalchemy import Engine, and_, delete, insert, select, update

from werkhub.booking.quota import LayeredPolicies, Policy
from werkhub.db import transaction
from werkhub.errors import NotFound
from werkhub.orgs.tables import org_policies, orgs

Kind = Literal["user", "group"]


class OrgPolicies:
    def __init__(self, writer: Engine, reader: Engine, layered: LayeredPolicies | None) -> None:
        self.writer, self.reader, self.layered = writer, reader, layered

    def refresh(self) -> None:
        """Hand every organisation's policies to the booking rules."""
        if self.layered is None:
            return
        found: dict[str, dict[str, Policy]] = {"user": {}, "group": {}}
        with self.reader.connect() as conn:
            for row in conn.execute(
                select(org_policies.c.kind, org_policies.c.name, org_policies.c.policy)
            ):
                found[row.kind][row.name] = Policy.model_validate(row.policy)
        self.layered.replace(found["user"], found["group"])

    def listing(self, slug: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(
                    org_policies.c.kind,
                    org_policies.c.name,
                    org_policies.c.policy,
                    org_policies.c.updated,
                    org_policies.c.updated_by,
                )
                .join(orgs, orgs.c.id == org_policies.c.org_id)
                .where(orgs.c.slug == slug)
                .order_by(org_policies.c.kind, org_policies.c.name)
            ).mappings()
            return [dict(r) for r in rows]

    def get(self, slug: str, kind: Kind, name: str) -> Policy:
        with self.reader.connect() as conn:
            found = conn.execute(
                select(org_policies.c.policy)
                .join(orgs, orgs.c.id == org_policies.c.org_id)
                .where(
                    and_(
                        orgs.c.slug == slug,
                        org_policies.c.kind == kind,
                        org_policies.c.name == name,
                    )
                )
            ).scalar()
        if found is None:
            raise NotFound(f"No policy set for {kind} '{name}' in organisation '{slug}'.")
        return Policy.model_validate(found)

    def put(self, slug: str, kind: Kind, name: str, policy: Policy, by: str) -> None:
        """Set (or replace) the policy; the caller checked that ``name`` is the
        organisation's."""
        values = {
            "policy": policy.model_dump(mode="json"),
            "updated": time.time(),
            "updated_by": by,
        }
        with transaction(self.writer) as conn:
            org_id = conn.execute(select(orgs.c.id).where(orgs.c.slug == slug)).scalar()
            if org_id is None:
                raise NotFound(f"No organisation '{slug}'.")
            key = and_(org_policies.c.kind == kind, org_policies.c.name == name)
            held = conn.execute(select(org_policies.c.org_id).where(key)).scalar()
            if held is None:
                conn.execute(
                    insert(org_policies), {"kind": kind, "name": name, "org_id": org_id, **values}
                )
            else:  # a stale row of a former organisation is taken over
                conn.execute(update(org_policies).where(key).values(org_id=org_id, **values))
        self.refresh()

    def drop(self, slug: str, kind: Kind, name: str, missing_ok: bool = False) -> None:
        with transaction(self.writer) as conn:
            org_id = conn.execute(select(orgs.c.id).where(orgs.c.slug == slug)).scalar()
            done = conn.execute(
                delete(org_policies).where(
                    and_(
                        org_policies.c.org_id == org_id,
                        org_policies.c.kind == kind,
                        org_policies.c.name == name,
                    )
                )
            ).rowcount
        if not done and not missing_ok:
            raise NotFound(f"No policy set for {kind} '{name}' in organisation '{slug}'.")
        self.refresh()
