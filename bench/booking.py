"""Booking ledger benchmark: create and availability throughput and latency, and how
availability queries scale with the number of bookings, on SQLite and PostgreSQL.

For each database it starts a real `werkhub up` on free loopback ports (MLflow off, a
16 x H100 inventory on two nodes, policies without limits so the ledger is measured,
not the policy refusals), creates 64 hub users with API tokens, and measures
1. `POST /bookings` and `GET /availability` (7-day window, step 60) at 1, 16 and 64
   concurrent clients: requests/s, p50/p99 latency, 409s counted apart. Each client is
   an asyncio task with its own HTTP connection and its own users (no two clients share
   a user, so per-user policy checks never serialize them). Bookings are 1 GPU-hour,
   spread over 360 future days by a permutation of hours, so they practically never
   conflict.
2. availability with 1k, 10k and 100k bookings in the database, seeded directly with
   SQLAlchemy (16 units, ~2 years, every booking in the future and 'booked'):
   p50/p99 at 1 and at 16 clients, plus a few creates among them.
3. the floor: `POST /probe`, a bare endpoint of the same service behind the same proxy,
   hub-token check and middleware, doing one insert in one write transaction of the same
   database; create and availability p99 are reported as ratios to its p99 at the same
   number of clients, measured in the same run.
4. units: availability and create with 100k bookings on 16 units (2 nodes, H100) against
   100k bookings of the same lengths on 6,000 units (1,200 nodes x 5, type L40S, the size
   of the Alibaba trace's site), so a 7-day window overlaps about as many bookings in both.
5. organisations (issue 16): create and availability p99 at 16 clients with every
   benchmark user in ONE organisation, against 50 organisations with 1,000 members among
   whom the benchmark's users are spread (``--orgs``, ``--org-users``); every organisation
   has a budget of 1,000,000 GPU-hours a month and guarantees on both GPU types, so the
   budget and guarantee checks run in every create. The organisations, budgets and
   guarantees are made through the service's API, the extra users in the hub in bulk;
   memberships are written straight into ``org_members`` (as bookings are seeded), so
   switching between the two layouts costs no hub round trips. Each layout runs
   ``--org-rounds`` times in ABBA order on an emptied ledger; latencies are pooled.
   Goal: each p99 with 50 organisations at most 1.10x the single organisation's.
Paths: through the proxy (`PUBLIC/services/werkhub/api`, what users see) and directly
on the service port (same path, no proxy hop). Client, hub, proxy, service and database
share this machine's cores.

    python bench/booking.py [--quick] [--db sqlite|postgres|both] [--path proxy|direct|both]
        [--orgs 50] [--org-users 1000] [--org-rounds 2] [--orgs-only]

The last line printed is one JSON object with the goals' figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml
from bench_support import free_port
from loadclient import Connection, Reply, Request, Stats, load, percentile, pooled, spread
from sqlalchemy import Engine, create_engine, delete, func, insert, select, text

from werkhub.booking.journal import KEEP
from werkhub.booking.tables import (
    audit,
    booking_units,
    bookings,
    ledger_journal,
    ledger_probes,
    ledger_spans,
    notifications,
    usage,
    waitlist,
)
from werkhub.config.schema import GpusSection
from werkhub.gpus.inventory import build_units
from werkhub.orgs.tables import org_members, orgs

ROOT = Path(__file__).resolve().parents[1]
GPU_TYPE = "H100"
USERS = 64
LEVELS = (1, 16, 64)
SIZES = (1_000, 10_000, 100_000)
CREATE_GOAL_MS = 50.0  # create p99 at 16 clients
AVAIL_GOAL_MS = 20.0  # availability p99 at 16 clients with 100k bookings
HOURS = 24 * 360  # phase 1 bookings lie in the next 360 days (policy allows 366)
STRIDE = 3943  # prime, coprime with HOURS: i -> (i * STRIDE) % HOURS is a permutation
SEED_SPAN_MIN = 730 * 24 * 60  # seeded bookings cover about two years
#: owners of the seeded bookings: hub accounts the benchmark creates first (bookings of an
#: owner the hub does not know are a deleted account's to the service, which then ends
#: them all in the background: 100k cancels ran under earlier runs' later phases)
SEED_USERS = [f"seed{k}" for k in range(500)]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

BIG_TYPE = "L40S"  # 6,000 units on 1,200 nodes: the units phase
BIG_NODES, BIG_PER_NODE = 1_200, 5
UNITS_GOAL = 2.0  # availability p99 with 6,000 units within 2x of 16 units
FLOOR_GOAL = 2.0  # create p99 at most 2x the floor's
ORGS_GOAL = 1.10  # create/availability p99 with 50 organisations within 1.1x of one
SOLO = "solo"  # the single organisation of the organisations phase's baseline
ORG_BUDGET = 1_000_000  # GPU-hours a month: never reached, but checked on every create
INVENTORY = {
    "nodes": [
        {
            "name": name,
            "devices": [{"index": i, "model": GPU_TYPE, "memory_gb": 80} for i in range(8)],
        }
        for name in ("n1", "n2")
    ]
    + [
        {
            "name": f"big{k:04d}",
            "devices": [{"index": i, "model": BIG_TYPE, "memory_gb": 48} for i in range(5)],
        }
        for k in range(BIG_NODES)
    ]
}
POLICY = {
    "gpu_hours_per_week": None,
    "max_booking_hours": 744,
    "max_advance_days": 366,
    "max_concurrent_gpus": None,
}


@dataclass
class Profile:
    seconds: float  # per load level in phase 1
    seq_queries: int  # phase 2: sequential availability queries
    conc_per_client: int  # phase 2: availability queries per client at 16 clients
    seq_creates: int  # phase 2: sequential creates among the seeded bookings


#: 150 queries per client at 16 clients: 2,400 in all, a p99 of the worst 24 (30 per client,
#: before, made a p99 of the worst five and let one pause of the service set it)
FULL = Profile(seconds=5.0, seq_queries=100, conc_per_client=150, seq_creates=30)
QUICK = Profile(seconds=1.0, seq_queries=15, conc_per_client=4, seq_creates=10)
#: after each seeding, before the measured mix
WARM_UP = Profile(seconds=0.0, seq_queries=20, conc_per_client=40, seq_creates=5)


@dataclass
class OrgOptions:
    orgs: int = 50  # 0: no organisations phase
    users: int = 1_000  # members of the organisations in all, the benchmark's among them
    rounds: int = 2  # ABBA: each layout this many times, latencies pooled
    only: bool = False  # the organisations phase alone


# ----------------------------------------------------------------------- helpers


def to_min(moment: datetime) -> int:
    return int((moment - EPOCH).total_seconds() // 60)


def from_min(minutes: int) -> datetime:
    return EPOCH + timedelta(minutes=minutes)


def iso(minutes: int) -> str:
    return from_min(minutes).isoformat()


def hour_ceiling(moment: datetime) -> int:
    return (to_min(moment) // 60 + 1) * 60


# ----------------------------------------------------------------------- CPU per request

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class CpuMeter:
    """CPU time per request of each part: the werkhub service, the hub (token checks),
    the proxy and this benchmark's own clients; read from /proc before and after a load."""

    PARTS = (
        ("service", "werkhub.service.app"),
        ("hub", "jupyterhub"),
        ("proxy", "configurable-http-proxy"),
    )

    def __init__(self) -> None:
        self.pids: dict[str, int] = {"client": os.getpid()}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            line = _cmdline(int(entry.name))
            for name, marker in self.PARTS:
                if marker in line and name not in self.pids:
                    if name == "hub" and ("werkhub.service" in line or "proxy" in line):
                        continue
                    self.pids[name] = int(entry.name)
        self.before: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: _cpu_seconds(pid) for name, pid in self.pids.items()}

    def line(self, requests: int) -> str:
        spent = {n: _cpu_seconds(p) - self.before[n] for n, p in self.pids.items()}
        parts = " ".join(f"{n} {1000 * v / max(1, requests):.2f}" for n, v in spent.items())
        return f"CPU ms per request: {parts}"


# ----------------------------------------------------------------------- werkhub


class Werkhub:
    """A `werkhub up` on free loopback ports; stop() by PID, also on errors."""

    def __init__(self, tmp: Path, db_url: str, admin_token: str) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.token = admin_token
        public, self.service_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{public}"
        self.config = tmp / "werkhub.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "hub": {
                        "public_url": self.url,
                        "hub_port": free_port(),
                        "proxy_api_port": free_port(),
                    },
                    "database": {"url": db_url},
                    "services": {
                        "werkhub": {
                            "port": self.service_port,
                            "time_zone": "UTC",
                            "probe": True,
                        },
                        "mlflow": {"enabled": False},
                    },
                    "gpus": INVENTORY,
                    "booking": {"policies": {"default": POLICY}},
                    "log_level": "WARNING",
                }
            )
        )
        self.db_url = db_url or f"sqlite:///{self.state / 'werkhub.sqlite'}"
        self.log = tmp / "werkhub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def api(self, path: str) -> str:
        base = self.url if path == "proxy" else f"http://127.0.0.1:{self.service_port}"
        return f"{base}/services/werkhub/api"

    def start(self) -> float:
        env = dict(os.environ, WERKHUB_ADMIN_TOKEN=self.token)
        env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env['PATH']}"
        t0 = time.perf_counter()
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "werkhub.cli.main",
                    "up",
                    "--state",
                    str(self.state),
                    "--config",
                    str(self.config),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.api('proxy')}/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        tail = self.log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"werkhub did not come up; log tail:\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def make_users(self, count: int) -> list[str]:
        names = [f"bench{i}" for i in range(count)]
        headers = {"Authorization": f"token {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as hub:
            hub.post("/hub/api/users", json={"usernames": names}).raise_for_status()
            tokens = []
            for name in names:
                reply = hub.post(f"/hub/api/users/{name}/tokens", json={"note": "bench"})
                reply.raise_for_status()
                tokens.append(reply.json()["token"])
        return tokens

    def bulk_users(self, names: list[str]) -> None:
        """Hub users without tokens, a few hundred per request."""
        headers = {"Authorization": f"token {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=300) as hub:
            for i in range(0, len(names), 250):
                reply = hub.post("/hub/api/users", json={"usernames": names[i : i + 250]})
                reply.raise_for_status()

    def admin_api(self) -> httpx.Client:
        """The service's API as the platform administrator (the admin token's hub user)."""
        return httpx.Client(
            base_url=self.api("proxy"),
            headers={"Authorization": f"token {self.token}"},
            timeout=120,
            trust_env=False,
        )


# ----------------------------------------------------------------------- seeding


def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": 60})
    return create_engine(url)


def clear(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (
            audit,
            notifications,
            usage,
            waitlist,
            booking_units,
            bookings,
            ledger_spans,
            ledger_probes,
        ):
            conn.execute(delete(table))


def seed(
    engine: Engine,
    count: int,
    base_min: int,
    units: list[str],
    rng: random.Random,
    gpu_type: str = GPU_TYPE,
    longest: float | None = None,
) -> None:
    """Replace all bookings by ``count`` one-unit bookings over ~2 years from ``base_min``:
    per unit a grid of equal slots (phase-shifted per unit), each holding one booking of
    30-80 % of the slot (of at most ``longest`` minutes) at the slot's start, so units never
    overlap and gaps remain."""
    clear(engine)
    now = time.time()
    with engine.connect() as conn:
        next_booking = (conn.scalar(select(func.max(bookings.c.id))) or 0) + 1
        next_unit = (conn.scalar(select(func.max(booking_units.c.id))) or 0) + 1
    planned: list[tuple[int, int, str]] = []
    for u, unit in enumerate(units):
        n = count // len(units) + (1 if u < count % len(units) else 0)
        slot = SEED_SPAN_MIN / n
        phase = slot * u / len(units)
        for j in range(n):
            start = base_min + int(phase + j * slot)
            length = max(1, int(min(slot, longest or slot) * rng.uniform(0.3, 0.8)))
            planned.append((start, start + length, unit))
    # newest first: SQLite's overlap trigger then scans almost nothing per insert
    planned.sort(reverse=True)
    b_rows, u_rows = [], []
    for k, (start, end, unit) in enumerate(planned):
        user = SEED_USERS[k % len(SEED_USERS)]
        b_rows.append(
            {
                "id": next_booking + k,
                "user": user,
                "gpu_type": gpu_type,
                "count": 1,
                "start_min": start,
                "end_min": end,
                "booked_end_min": end,
                "state": "booked",
                "created": now,
                "updated": now,
                "created_by": user,
            }
        )
        u_rows.append(
            {
                "id": next_unit + k,
                "booking_id": next_booking + k,
                "gpu_type": gpu_type,
                "unit": unit,
                "start_min": start,
                "end_min": end,
                "holding": True,
            }
        )
    batch = 10_000
    with engine.begin() as conn:
        for i in range(0, len(b_rows), batch):
            conn.execute(bookings.insert(), b_rows[i : i + batch])
            conn.execute(booking_units.insert(), u_rows[i : i + batch])
        # what writes.stretch records for bookings made through the ledger
        longest_min = max(end - start for start, end, _ in planned)
        conn.execute(ledger_spans.insert().values(gpu_type=gpu_type, longest_min=longest_min))
        # a site's journal of unit changes holds about journal.KEEP entries (the service
        # prunes a batch each tick); a bulk load leaves a backlog of 100k+ that no site has,
        # and pruning it ran into the measurements for minutes
        newest = select(func.max(ledger_journal.c.seq)).scalar_subquery()
        conn.execute(delete(ledger_journal).where(ledger_journal.c.seq <= newest - KEEP))
        if engine.dialect.name == "postgresql":
            for table in ("bookings", "booking_units"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT max(id) FROM {table}))"
                    )
                )
    # settle as a running site would have: statistics and visibility (autovacuum on
    # PostgreSQL), SQLite's write-ahead log folded into the database (a checkpoint)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM ANALYZE bookings"))
            conn.execute(text("VACUUM ANALYZE booking_units"))
        else:
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def count_bookings(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(bookings)) or 0


# ----------------------------------------------------------------------- requests


def create_request(base_min: int, hours: int, minutes: int = 60) -> Request:
    """Bookings of one unit; request i starts at hour (i * STRIDE) % hours after base."""

    async def send(client: Connection, token: str, i: int) -> Reply:
        start = base_min + ((i * STRIDE) % hours) * 60
        return await client.post(
            "/bookings",
            headers={"Authorization": f"token {token}"},
            json={
                "gpu_type": GPU_TYPE,
                "count": 1,
                "start": iso(start),
                "duration_minutes": minutes,
            },
        )

    return send


def probe_request() -> Request:
    """The floor: the same body as a create, to an endpoint that does one insert."""

    async def send(client: Connection, token: str, i: int) -> Reply:
        return await client.post(
            "/probe",
            headers={"Authorization": f"token {token}"},
            json={"gpu_type": GPU_TYPE, "count": 1, "start": iso(0), "duration_minutes": 60},
        )

    return send


def random_create_request(
    lo_min: int, hi_min: int, rng: random.Random, gpu_type: str = GPU_TYPE
) -> Request:
    async def send(client: Connection, token: str, i: int) -> Reply:
        start = rng.randrange(lo_min, hi_min)
        return await client.post(
            "/bookings",
            headers={"Authorization": f"token {token}"},
            json={"gpu_type": gpu_type, "count": 1, "start": iso(start), "duration_minutes": 15},
        )

    return send


def availability_request(
    lo_min: int, hi_min: int, rng: random.Random, gpu_type: str = GPU_TYPE
) -> Request:
    """7-day windows, step 60, starting at a random whole hour in [lo, hi)."""

    async def send(client: Connection, token: str, i: int) -> Reply:
        start = rng.randrange(lo_min // 60, hi_min // 60) * 60
        return await client.get(
            "/availability",
            headers={"Authorization": f"token {token}"},
            params={
                "gpu_type": gpu_type,
                "start": iso(start),
                "end": iso(start + 7 * 24 * 60),
                "step": 60,
            },
        )

    return send


# ----------------------------------------------------------------------- one database


@dataclass
class Result:
    db: str
    create16: dict[str, Stats] = field(default_factory=dict)
    floor: dict[tuple[str, int], Stats] = field(default_factory=dict)
    #: availability with 100k bookings on 16 units, at 1 and at 16 clients
    avail1_100k: dict[str, Stats] = field(default_factory=dict)
    avail16_100k: dict[str, Stats] = field(default_factory=dict)
    #: the same on 6,000 units (the units phase)
    big1: dict[str, Stats] = field(default_factory=dict)
    big16: dict[str, Stats] = field(default_factory=dict)
    #: the organisations phase: (path, "solo" | "orgs") -> (create, availability) at 16
    orgs: dict[tuple[str, str], tuple[Stats, Stats]] = field(default_factory=dict)
    skipped: str = ""


def run_database(db: str, profile: Profile, paths: list[str], options: OrgOptions) -> Result:
    result = Result(db)
    rng = random.Random(42)
    (ROOT / ".cache").mkdir(exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=ROOT / ".cache", prefix=f"bench-booking-{db}-") as tmp_s,
        contextlib.ExitStack() as postgres,
    ):
        tmp = Path(tmp_s)
        db_url = ""
        werkhub: Werkhub | None = None
        try:
            if db == "postgres":
                sys.path.insert(0, str(ROOT))  # the test suite's throwaway PostgreSQL server
                from tests.postgres.server import PostgresError, running_postgres

                try:
                    db_url = postgres.enter_context(running_postgres(tmp / "pg"))
                except PostgresError as exc:
                    result.skipped = str(exc).splitlines()[0]
                    print(f"\n== PostgreSQL: skipped: {result.skipped}")
                    return result
            werkhub = Werkhub(tmp, db_url, os.urandom(32).hex())
            up = werkhub.start()
            label = "SQLite (state/werkhub.sqlite)" if db == "sqlite" else "PostgreSQL (throwaway)"
            print(f"\n== {label}: werkhub up in {up:.1f} s; 16 x {GPU_TYPE} on 2 nodes")
            tokens = werkhub.make_users(USERS)
            werkhub.bulk_users(SEED_USERS)
            engine = engine_for(werkhub.db_url)
            try:
                if not options.only:
                    measure(werkhub, engine, tokens, profile, paths, result, rng)
                if options.orgs:
                    measure_orgs(werkhub, engine, tokens, profile, paths, result, rng, options)
            finally:
                engine.dispose()
        finally:
            if werkhub is not None:
                werkhub.stop()
    return result


def measure(
    werkhub: Werkhub,
    engine: Engine,
    tokens: list[str],
    profile: Profile,
    paths: list[str],
    result: Result,
    rng: random.Random,
) -> None:
    now = datetime.now(UTC)
    base = hour_ceiling(now) + 24 * 60  # phase 1 bookings: from tomorrow, 360 days
    print(
        f"-- throughput: {profile.seconds:g} s per level, 1-GPU-hour bookings spread over "
        f"360 days; availability = 7-day window, step 60 (168 steps). Closed loop: a "
        f"client sends its next request when the last is answered, so once the service "
        f"saturates, latency ~ clients / throughput"
    )
    create = create_request(base, HOURS)
    probe = probe_request()
    meter = CpuMeter()
    for path in paths:
        for c in LEVELS:
            meter.start()
            floor = asyncio.run(
                load(werkhub.api(path), spread(tokens, c), probe, seconds=profile.seconds)
            )
            result.floor[path, c] = floor
            print(f"[{path:6s}] floor (probe) c={c:2d}  {floor.line()}")
            if c == 16:
                print(f"         {meter.line(floor.total)}")
            meter.start()
            stats = asyncio.run(
                load(werkhub.api(path), spread(tokens, c), create, seconds=profile.seconds)
            )
            ratio = percentile(stats.ok(), 0.99) / percentile(floor.ok(), 0.99)
            print(f"[{path:6s}] create        c={c:2d}  {stats.line()}  p99 {ratio:.2f}x floor")
            if c == 16:
                print(f"         {meter.line(stats.total)}")
                result.create16[path] = stats
    present = count_bookings(engine)
    avail = availability_request(base, base + (HOURS - 7 * 24) * 60, rng)
    for path in paths:
        for c in LEVELS:
            meter.start()
            stats = asyncio.run(
                load(werkhub.api(path), spread(tokens, c), avail, seconds=profile.seconds)
            )
            cpu = meter.line(stats.total)
            ratio = percentile(stats.ok(), 0.99) / percentile(result.floor[path, c].ok(), 0.99)
            print(
                f"[{path:6s}] availability  c={c:2d}  {stats.line()}  ({present} bookings; "
                f"p99 {ratio:.2f}x floor)"
            )
            if c == 16:
                print(f"         {cpu}")

    print(
        f"-- availability vs. bookings in the database (seeded over 2 years, 16 units; "
        f"{profile.seq_queries} queries at 1 client, {16 * profile.conc_per_client} at "
        f"16 clients; {profile.seq_creates} 15-min creates at 1 client among them)"
    )
    seed_base = hour_ceiling(now) + 2 * 24 * 60
    avail = availability_request(
        seed_base + 31 * 24 * 60, seed_base + SEED_SPAN_MIN - 8 * 1440, rng
    )
    creates = random_create_request(seed_base, seed_base + 355 * 24 * 60, rng)
    units = [
        u.id for u in build_units(GpusSection.model_validate(INVENTORY)) if u.gpu_type == GPU_TYPE
    ]
    grow: dict[str, dict[int, tuple[float, float, float]]] = collections.defaultdict(dict)
    for size in SIZES:
        t0 = time.perf_counter()
        seed(engine, size, seed_base, units, rng)
        seeded = time.perf_counter() - t0
        present = count_bookings(engine)
        window = round(size * 7 / 730 + len(units))
        print(
            f"   {present} bookings seeded in {seeded:.1f} s "
            f"(a 7-day window overlaps ~{window} of them)"
        )
        # not measured: the service takes in what the seeding wrote (its journal, the
        # type's bookings in memory, their first collection); a site holding this many
        # bookings did that long ago
        query_mix(werkhub.api(paths[0]), tokens, avail, creates, WARM_UP)
        for path in paths:
            api = werkhub.api(path)
            one, many, made = query_mix(api, tokens, avail, creates, profile)
            ok1, ok16, okc = one.ok(), many.ok(), made.ok()
            grow[path][size] = (
                percentile(ok1, 0.5),
                percentile(ok1, 0.99),
                percentile(ok16, 0.99),
            )
            line = (
                f"[{path:6s}] {size:>7,} bookings  availability 1 client: "
                f"p50 {percentile(ok1, 0.5):6.1f} p99 {percentile(ok1, 0.99):6.1f} ms | "
                f"16 clients: p50 {percentile(ok16, 0.5):6.1f} p99 {percentile(ok16, 0.99):6.1f} "
                f"ms {many.rate():6.1f} req/s | create: p50 {percentile(okc, 0.5):6.1f} "
                f"p99 {percentile(okc, 0.99):6.1f} ms, 409 x{len(made.latencies.get(409, []))}"
            )
            other = " ".join(s.other() for s in (one, many, made) if s.other())
            print(line + (f" | other: {other}" if other else ""))
            if size == SIZES[-1]:
                result.avail1_100k[path], result.avail16_100k[path] = one, many
    measure_units(werkhub, engine, tokens, profile, paths, result, rng, seed_base, units)
    for path in paths:
        first, last = grow[path][SIZES[0]], grow[path][SIZES[-1]]
        ratios = ", ".join(
            f"{name} {a:.1f} -> {b:.1f} ms (x{b / a:.1f})"
            for name, a, b in zip(
                ("1-client p50", "1-client p99", "16-client p99"), first, last, strict=True
            )
        )
        print(f"[{path:6s}] availability 1k -> 100k bookings: {ratios}")
    clear(engine)


def query_mix(
    api: str, tokens: list[str], avail: Request, creates: Request, profile: Profile
) -> tuple[Stats, Stats, Stats]:
    """Availability at 1 and at 16 clients, then a few creates at 1 client."""
    one = asyncio.run(load(api, [tokens], avail, per_client=profile.seq_queries))
    many = asyncio.run(load(api, spread(tokens, 16), avail, per_client=profile.conc_per_client))
    made = asyncio.run(load(api, [tokens], creates, per_client=profile.seq_creates))
    return one, many, made


def measure_units(
    werkhub: Werkhub,
    engine: Engine,
    tokens: list[str],
    profile: Profile,
    paths: list[str],
    result: Result,
    rng: random.Random,
    seed_base: int,
    small: list[str],
) -> None:
    """100k bookings on 6,000 units against 100k on 16 (measured last in phase 2): the same
    booking lengths, so a 7-day window overlaps about as many bookings in both."""
    big = [
        u.id for u in build_units(GpusSection.model_validate(INVENTORY)) if u.gpu_type == BIG_TYPE
    ]
    size = SIZES[-1]
    longest = SEED_SPAN_MIN / (size / len(small))  # the slot of one unit among 16
    t0 = time.perf_counter()
    seed(engine, size, seed_base, big, rng, gpu_type=BIG_TYPE, longest=longest)
    print(
        f"-- units: {size:,} bookings on {len(big):,} x {BIG_TYPE} ({BIG_NODES:,} nodes) "
        f"seeded in {time.perf_counter() - t0:.1f} s, lengths as on {len(small)} units"
    )
    avail = availability_request(
        seed_base + 31 * 24 * 60, seed_base + SEED_SPAN_MIN - 8 * 1440, rng, BIG_TYPE
    )
    creates = random_create_request(seed_base, seed_base + 355 * 24 * 60, rng, BIG_TYPE)
    query_mix(werkhub.api(paths[0]), tokens, avail, creates, WARM_UP)  # as after each seeding
    for path in paths:
        api = werkhub.api(path)
        one, many, made = query_mix(api, tokens, avail, creates, profile)
        result.big1[path], result.big16[path] = one, many
        small16 = result.avail16_100k[path]
        ok1, ok16, okc = one.ok(), many.ok(), made.ok()
        ratio = percentile(ok16, 0.99) / percentile(small16.ok(), 0.99)
        print(
            f"[{path:6s}] {len(big):,} units  availability 1 client: p50 "
            f"{percentile(ok1, 0.5):6.1f} p99 {percentile(ok1, 0.99):6.1f} ms | 16 clients: "
            f"p50 {percentile(ok16, 0.5):6.1f} p99 {percentile(ok16, 0.99):6.1f} ms "
            f"({ratio:.2f}x 16 units) | create: p50 {percentile(okc, 0.5):6.1f} "
            f"p99 {percentile(okc, 0.99):6.1f} ms"
        )


# ----------------------------------------------------------------------- organisations


def org_slug(k: int) -> str:
    return f"org{k:02d}"


def split(total: int, parts: int, k: int) -> int:
    """Part ``k`` of ``total`` shared out as evenly as whole numbers allow."""
    return total // parts + (1 if k < total % parts else 0)


def make_orgs(werkhub: Werkhub, count: int) -> None:
    """``solo`` and ``count`` organisations through the service's API, each with a budget
    and guarantees: ``solo`` half of each type, the others the other half shared out; no
    guarantee above one node's GPUs (the API refuses more, as it does for a booking)."""
    units = build_units(GpusSection.model_validate(INVENTORY))
    sizes: dict[str, int] = collections.Counter(u.gpu_type for u in units)
    per_node = collections.Counter((u.gpu_type, u.node) for u in units)
    largest = {t: max(n for (tt, _), n in per_node.items() if tt == t) for t in sizes}
    plan = {SOLO: {t: min(n // 2, largest[t]) for t, n in sizes.items()}}
    for k in range(count):
        plan[org_slug(k)] = {
            t: min(split(n - n // 2, count, k), largest[t]) for t, n in sizes.items()
        }
    with werkhub.admin_api() as api:
        for slug, guarantee in plan.items():
            for reply in (
                api.post("/orgs", json={"slug": slug, "name": f"Bench {slug}"}),
                api.patch(f"/orgs/{slug}", json={"budget_gpu_hours": ORG_BUDGET}),
                api.put(f"/orgs/{slug}/guarantees", json=guarantee),
            ):
                if reply.is_error:
                    raise RuntimeError(f"{reply.request.url}: {reply.status_code} {reply.text}")
    print(f"   guarantees: {SOLO} {plan[SOLO]}, {org_slug(0)} {plan[org_slug(0)]}, ...")


def place_members(engine: Engine, layout: dict[str, str]) -> None:
    """Memberships as ``layout`` (user -> organisation slug) says, and no others."""
    now = time.time()
    with engine.begin() as conn:
        ids = {r.slug: r.id for r in conn.execute(select(orgs.c.slug, orgs.c.id))}
        conn.execute(delete(org_members))
        rows = [
            {"user": u, "org_id": ids[slug], "admin": False, "added": now}
            for u, slug in layout.items()
        ]
        conn.execute(insert(org_members), rows)


def borrowed_count(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(bookings)) or 0
        lent = conn.scalar(select(func.count()).where(bookings.c.borrowed.is_(True))) or 0
    return int(lent), int(total)


def measure_orgs(
    werkhub: Werkhub,
    engine: Engine,
    tokens: list[str],
    profile: Profile,
    paths: list[str],
    result: Result,
    rng: random.Random,
    options: OrgOptions,
) -> None:
    """Create and availability at 16 clients with the benchmark's users in one organisation
    against ``options.orgs`` organisations of ``options.users`` members in all."""
    n, total = options.orgs, max(options.users, USERS)
    t0 = time.perf_counter()
    extra = [f"orgm{i}" for i in range(total - USERS)]
    werkhub.bulk_users(extra)
    made = time.perf_counter() - t0
    make_orgs(werkhub, n)
    bench_users = [f"bench{i}" for i in range(USERS)]
    solo = dict.fromkeys(bench_users, SOLO)
    # the clients' users first, round robin, so they sit in as many organisations as they can
    spread_out = {u: org_slug(i % n) for i, u in enumerate(bench_users + extra)}
    print(
        f"-- organisations: {len(extra)} more hub users in {made:.1f} s, {n + 1} organisations "
        f"(budget {ORG_BUDGET:,} GPU-hours a month each, guarantees on {GPU_TYPE} and "
        f"{BIG_TYPE}) in {time.perf_counter() - t0 - made:.1f} s; layouts: '{SOLO}' = the "
        f"{USERS} benchmark users in one organisation; 'orgs' = {total:,} members over {n} "
        f"organisations; {options.rounds} x {profile.seconds:g} s per layout and request, "
        f"ABBA, ledger emptied before each"
    )
    base = hour_ceiling(datetime.now(UTC)) + 24 * 60
    create = create_request(base, HOURS)
    avail = availability_request(base, base + (HOURS - 7 * 24) * 60, rng)
    layouts = {SOLO: solo, "orgs": spread_out}
    for path in paths:
        runs: dict[str, tuple[list[Stats], list[Stats]]] = {k: ([], []) for k in layouts}
        for r in range(options.rounds):
            order = list(layouts) if r % 2 == 0 else list(reversed(layouts))
            for name in order:
                clear(engine)
                place_members(engine, layouts[name])
                made_s = asyncio.run(
                    load(werkhub.api(path), spread(tokens, 16), create, seconds=profile.seconds)
                )
                lent, present = borrowed_count(engine)
                seen_s = asyncio.run(
                    load(werkhub.api(path), spread(tokens, 16), avail, seconds=profile.seconds)
                )
                runs[name][0].append(made_s)
                runs[name][1].append(seen_s)
                print(
                    f"[{path:6s}] round {r + 1} {name:4s} create c=16  {made_s.line()}  "
                    f"({lent} of {present} borrowed)"
                )
                print(f"[{path:6s}] round {r + 1} {name:4s} avail  c=16  {seen_s.line()}")
        for name, (c_runs, a_runs) in runs.items():
            result.orgs[path, name] = (pooled(c_runs), pooled(a_runs))
        base_c, base_a = result.orgs[path, SOLO]
        many_c, many_a = result.orgs[path, "orgs"]
        for what, one, many in (("create", base_c, many_c), ("availability", base_a, many_a)):
            a, b = percentile(one.ok(), 0.99), percentile(many.ok(), 0.99)
            print(
                f"[{path:6s}] {what:12s} p99 @16: 1 organisation {a:6.1f} ms, {n} organisations "
                f"{b:6.1f} ms: {b / a:.2f}x (goal <= {ORGS_GOAL:.2f}x: "
                f"{'PASS' if b / a <= ORGS_GOAL else 'MISS'})"
            )
    clear(engine)
    with engine.begin() as conn:
        conn.execute(delete(org_members))


# ----------------------------------------------------------------------- main


def verdict(value: float, goal: float) -> str:
    return f"{value:7.1f} ms  (goal < {goal:g} ms: {'met' if value < goal else 'MISSED'})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few requests: a smoke run")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--path", choices=("proxy", "direct", "both"), default="both")
    parser.add_argument(
        "--orgs",
        type=int,
        default=50,
        help="organisations of the organisations phase (default 50; 0 leaves it out)",
    )
    parser.add_argument(
        "--org-users",
        type=int,
        default=1_000,
        help="their members in all, the 64 benchmark users among them (default 1000)",
    )
    parser.add_argument(
        "--org-rounds",
        type=int,
        default=None,
        help="runs of each layout, ABBA, latencies pooled (default 2, 1 with --quick)",
    )
    parser.add_argument("--orgs-only", action="store_true", help="the organisations phase alone")
    args = parser.parse_args()
    options = OrgOptions(
        orgs=max(0, args.orgs),
        users=args.org_users,
        rounds=args.org_rounds or (1 if args.quick else 2),
        only=args.orgs_only,
    )
    if options.only and not options.orgs:
        parser.error("--orgs-only needs --orgs > 0")
    profile = QUICK if args.quick else FULL
    paths = ["proxy", "direct"] if args.path == "both" else [args.path]
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    t0 = time.perf_counter()
    print(
        f"booking benchmark ({'quick' if args.quick else 'full'}); {os.cpu_count()} CPUs shared "
        "by clients, proxy, hub, service and database; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    results = [run_database(db, profile, paths, options) for db in dbs]
    print("\n== goals")
    summary: dict[str, object] = {
        "benchmark": "booking",
        "profile": "quick" if args.quick else "full",
        "cpus": os.cpu_count(),
        "orgs": options.orgs,
        "org_users": max(options.users, USERS),
        "org_rounds": options.rounds,
    }
    rows: list[dict[str, object]] = []
    summary["results"] = rows
    for res in results:
        name = "SQLite" if res.db == "sqlite" else "PostgreSQL"
        if res.skipped:
            print(f"{name:10s} skipped: {res.skipped}")
            rows.append({"db": res.db, "skipped": res.skipped})
            continue
        for path in paths:
            entry: dict[str, object] = {"db": res.db, "path": path}
            rows.append(entry)
            if options.orgs:
                base_c, base_a = res.orgs[path, SOLO]
                many_c, many_a = res.orgs[path, "orgs"]
                for what, one, many in (
                    ("create", base_c, many_c),
                    ("availability", base_a, many_a),
                ):
                    a, b = percentile(one.ok(), 0.99), percentile(many.ok(), 0.99)
                    ok = b / a <= ORGS_GOAL
                    print(
                        f"{name:10s} [{path:6s}] {what} p99 @16, {options.orgs} orgs / 1 org: "
                        f"{b / a:7.2f} x  ({a:.1f} -> {b:.1f} ms; goal <= {ORGS_GOAL:.2f}x: "
                        f"{'PASS' if ok else 'MISS'})"
                    )
                    entry[f"orgs_{what}_p99_ms"] = {"one": round(a, 2), "many": round(b, 2)}
                    entry[f"orgs_{what}_ratio"] = round(b / a, 3)
                    entry[f"orgs_{what}_pass"] = ok
            if options.only:
                continue
            c16 = percentile(res.create16[path].ok(), 0.99)
            a16 = percentile(res.avail16_100k[path].ok(), 0.99)
            entry["create_p99_ms"] = round(c16, 2)
            entry["availability_100k_p99_ms"] = round(a16, 2)
            print(
                f"{name:10s} [{path:6s}] create p99 @16 clients:             "
                f"{verdict(c16, CREATE_GOAL_MS)}"
            )
            f16 = percentile(res.floor[path, 16].ok(), 0.99)
            print(
                f"{name:10s} [{path:6s}] create p99 / floor p99 @16 clients:  "
                f"{c16 / f16:7.2f} x  (floor {f16:.1f} ms; goal <= {FLOOR_GOAL:g}x: "
                f"{'met' if c16 / f16 <= FLOOR_GOAL else 'MISSED'})"
            )
            print(
                f"{name:10s} [{path:6s}] availability p99 @16 clients, 100k: "
                f"{verdict(a16, AVAIL_GOAL_MS)}  ({a16 / f16:.2f}x floor)"
            )
            u = percentile(res.big1[path].ok(), 0.5) / percentile(res.avail1_100k[path].ok(), 0.5)
            u16 = percentile(res.big16[path].ok(), 0.99) / a16
            print(
                f"{name:10s} [{path:6s}] availability cost 6,000 / 16 units: "
                f"{u:7.2f} x  (p50 at 1 client; goal <= {UNITS_GOAL:g}x: "
                f"{'met' if u <= UNITS_GOAL else 'MISSED'}; p99 at 16 clients {u16:.2f}x)"
            )
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"total {time.perf_counter() - t0:.0f} s; load average {load_avg}")
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
