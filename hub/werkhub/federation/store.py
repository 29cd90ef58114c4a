"""Storage of federations, their parties, runs and rounds (SQLite and PostgreSQL): every
operation is one transaction, and a refused one writes nothing. Party moves and run starts
check the state they start from inside their transaction, so two admins answering at once
cannot both win. Who may see or do what is decided by :mod:`werkhub.federation.rules`;
this store answers NotFound for a federation that does not exist."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from werkhub.db import transaction
from werkhub.errors import Conflict, NotFound
from werkhub.federation import rules
from werkhub.federation.tables import (
    federation_parties,
    federation_rounds,
    federation_runs,
    federations,
)

LIVE = ("starting", "running")


def run_row(row: Any) -> dict[str, Any]:
    """A run as the rest of werkhub uses it (Flower's run id as a number)."""
    found = dict(row)
    if found.get("flower_run_id") is not None:
        found["flower_run_id"] = int(found["flower_run_id"])
    return found


class FederationStore:
    def __init__(self, writer: Engine, reader: Engine) -> None:
        self.writer, self.reader = writer, reader

    # reading -------------------------------------------------------------------------
    @staticmethod
    def _parties(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if not ids:
            return found
        rows = conn.execute(
            select(federation_parties)
            .where(federation_parties.c.federation_id.in_(ids))
            .order_by(federation_parties.c.org)
        ).mappings()
        for row in rows:
            found[row["federation_id"]].append(dict(row))
        return found

    def get(self, fid: int) -> dict[str, Any]:
        """The federation with its parties (NotFound when there is none)."""
        with self.reader.connect() as conn:
            row = conn.execute(select(federations).where(federations.c.id == fid)).mappings()
            found = row.first()
            if found is None:
                raise NotFound(f"No federation {fid}.")
            return {**dict(found), "parties": self._parties(conn, [fid])[fid]}

    def listing(self, org: str | None, everything: bool = False) -> list[dict[str, Any]]:
        """Federations organisation ``org`` owns or is (or was) invited to; all of them
        for ``everything`` (platform admins)."""
        query = select(federations).order_by(federations.c.id)
        if not everything:
            invited = select(federation_parties.c.federation_id).where(
                federation_parties.c.org == org
            )
            query = query.where(or_(federations.c.owner_org == org, federations.c.id.in_(invited)))
        with self.reader.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
            parties = self._parties(conn, [r["id"] for r in rows])
        return [{**r, "parties": parties[r["id"]]} for r in rows]

    def open_federations(self) -> list[dict[str, Any]]:
        return [f for f in self.listing(None, everything=True) if f["state"] == "open"]

    def runs(self, fid: int) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = [
                run_row(r)
                for r in conn.execute(
                    select(federation_runs)
                    .where(federation_runs.c.federation_id == fid)
                    .order_by(federation_runs.c.id)
                ).mappings()
            ]
            rounds = self._rounds(conn, [r["id"] for r in rows])
        return [{**r, "round_list": rounds[r["id"]]} for r in rows]

    @staticmethod
    def _rounds(conn: Connection, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        found: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for row in conn.execute(
                select(federation_rounds)
                .where(federation_rounds.c.run_id.in_(ids))
                .order_by(federation_rounds.c.run_id, federation_rounds.c.round)
            ).mappings():
                found[row["run_id"]].append(dict(row))
        return found

    def run(self, fid: int, rid: int) -> dict[str, Any]:
        with self.reader.connect() as conn:
            row = (
                conn.execute(
                    select(federation_runs).where(
                        and_(federation_runs.c.id == rid, federation_runs.c.federation_id == fid)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                raise NotFound(f"No run {rid} of federation {fid}.")
            return {**run_row(row), "round_list": self._rounds(conn, [rid])[rid]}

    def live_runs(self) -> list[dict[str, Any]]:
        """Runs not ended yet (the supervisor watches them, also after a restart)."""
        with self.reader.connect() as conn:
            return [
                run_row(r)
                for r in conn.execute(
                    select(federation_runs)
                    .where(federation_runs.c.status.in_(LIVE))
                    .order_by(federation_runs.c.id)
                ).mappings()
            ]

    # federations ---------------------------------------------------------------------
    def create(self, row: dict[str, Any], invite: list[str], by: str) -> dict[str, Any]:
        now = time.time()
        try:
            with transaction(self.writer) as conn:
                fid = conn.execute(
                    insert(federations).returning(federations.c.id),
                    {**row, "state": "open", "created": now, "updated": now},
                ).scalar_one()
                for slug in invite:
                    conn.execute(
                        insert(federation_parties),
                        {
                            "federation_id": fid,
                            "org": slug,
                            "state": "invited",
                            "gpus": 0,
                            "invited_by": by,
                            "updated": now,
                        },
                    )
        except IntegrityError:
            raise Conflict(
                f"your organisation has a federation named '{row['name']}' already", field="name"
            ) from None
        return self.get(fid)

    def remove(self, fid: int) -> None:
        with transaction(self.writer) as conn:
            conn.execute(delete(federations).where(federations.c.id == fid))

    # parties -------------------------------------------------------------------------
    def move_party(
        self, fid: int, slug: str, action: str, by: str, values: dict[str, Any] | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """Move party ``slug`` by ``action`` (rules.PARTY_MOVES) with ``values``; returns
        (the state it came from, the party row now). Conflict when the move is not
        allowed from its state (nothing written)."""
        now = time.time()
        with transaction(self.writer) as conn:
            current = (
                conn.execute(
                    select(federation_parties).where(
                        and_(
                            federation_parties.c.federation_id == fid,
                            federation_parties.c.org == slug,
                        )
                    )
                )
                .mappings()
                .first()
            )
            before = None if current is None else current["state"]
            try:
                target = rules.party_move(action, slug, before)
            except ValueError as exc:
                raise Conflict(str(exc), field="org") from None
            change = {**(values or {}), "state": target, "updated": now}
            if current is None:
                conn.execute(
                    insert(federation_parties),
                    {"federation_id": fid, "org": slug, "gpus": 0, "invited_by": by, **change},
                )
            else:
                if action == "invite":
                    change.update(invited_by=by, user=None, data_folder=None, node=None, gpus=0)
                conn.execute(
                    update(federation_parties)
                    .where(
                        and_(
                            federation_parties.c.federation_id == fid,
                            federation_parties.c.org == slug,
                            federation_parties.c.state == before,
                        )
                    )
                    .values(**change)
                )
            row = conn.execute(
                select(federation_parties).where(
                    and_(
                        federation_parties.c.federation_id == fid,
                        federation_parties.c.org == slug,
                    )
                )
            ).mappings()
            return before, dict(row.one())

    def set_node(self, fid: int, slug: str, node: str | None) -> None:
        with transaction(self.writer) as conn:
            conn.execute(
                update(federation_parties)
                .where(
                    and_(
                        federation_parties.c.federation_id == fid,
                        federation_parties.c.org == slug,
                    )
                )
                .values(node=node, updated=time.time())
            )

    # runs ----------------------------------------------------------------------------
    def start_run(self, fid: int, row: dict[str, Any], min_parties: int) -> dict[str, Any]:
        """A new run in state ``starting``, unless a run is going or fewer than
        ``min_parties`` parties accepted (Conflict; nothing written)."""
        with transaction(self.writer) as conn:
            going = conn.execute(
                select(federation_runs.c.id).where(
                    and_(
                        federation_runs.c.federation_id == fid,
                        federation_runs.c.status.in_(LIVE),
                    )
                )
            ).first()
            accepted = conn.execute(
                select(federation_parties.c.org).where(
                    and_(
                        federation_parties.c.federation_id == fid,
                        federation_parties.c.state == "accepted",
                    )
                )
            ).all()
            refusal = rules.start_refusal(len(accepted), min_parties, going is not None)
            if refusal:
                raise Conflict(refusal)
            if row.get("flower_run_id") is not None:  # unsigned 64-bit: kept as text
                row = {**row, "flower_run_id": str(int(row["flower_run_id"]))}
            rid = conn.execute(
                insert(federation_runs).returning(federation_runs.c.id),
                {
                    "federation_id": fid,
                    "status": "starting",
                    "message": "",
                    "bookings": {},
                    "cursor": {},
                    "mlflow": {},
                    "started": time.time(),
                    **row,
                },
            ).scalar_one()
        return self.run(fid, rid)

    def update_run(self, rid: int, values: dict[str, Any], when: tuple[str, ...] = ()) -> bool:
        """Change run ``rid``; with ``when``, only while its status is one of those
        (False when it was not). An ended run gets its end time."""
        if values.get("status") in rules.RUN_ENDED and "ended" not in values:
            values = {**values, "ended": time.time()}
        if values.get("flower_run_id") is not None:
            values = {**values, "flower_run_id": str(int(values["flower_run_id"]))}
        query = update(federation_runs).where(federation_runs.c.id == rid)
        if when:
            query = query.where(federation_runs.c.status.in_(when))
        with transaction(self.writer) as conn:
            return bool(conn.execute(query.values(**values)).rowcount)

    def add_round(self, rid: int, found: rules.Round) -> bool:
        """Record a round once (False when it was recorded before)."""
        try:
            with transaction(self.writer) as conn:
                conn.execute(
                    insert(federation_rounds),
                    {
                        "run_id": rid,
                        "round": found.round,
                        "parties": found.parties,
                        "loss": found.loss,
                        "metrics": found.metrics,
                        "bytes_in": found.bytes_in,
                        "bytes_out": found.bytes_out,
                        "seconds": found.seconds,
                        "at": time.time(),
                    },
                )
        except IntegrityError:
            return False
        return True
