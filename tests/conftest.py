"""Test tiers: each folder under tests/ is a tier; tiers whose system packages are missing
(see scripts/system-deps.sh) are skipped, and the summary names every tier and its fate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import create_engine, text

from tests.postgres.server import NOT_INSTALLED, PostgresError, find_pg_ctl, running_postgres
from tests.support.budget import SELECTED
from tests.support.summary import LINES

# make test: fixed seeds, so a run fails the same way twice; make test-deep: fresh seeds and
# more examples (tests/support/budget.py), to look for what the fixed seeds do not reach
settings.register_profile("default", derandomize=True, database=None, deadline=None)
settings.register_profile("deep", derandomize=False, database=None, deadline=None)
settings.load_profile(SELECTED)

TESTS = Path(__file__).resolve().parent
TIERS_FILE = TESTS.parent / ".cache" / "tiers.env"
KNOWN_TIERS = (
    "unit",
    "booking",
    "hub",
    "security",
    "templates",
    "containers",
    "browser",
    "postgres",
    "slurm",
    "federation",
)


def _skipped_tiers() -> dict[str, str]:
    if not TIERS_FILE.exists():
        return {}
    skips = {}
    for line in TIERS_FILE.read_text().splitlines():
        key, _, reason = line.partition("=")
        if key.startswith("WERKHUB_SKIP_"):
            skips[key.removeprefix("WERKHUB_SKIP_").lower()] = reason
    return skips


def _tier(path: Path) -> str:
    try:
        return path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return "other"


#: tiers whose tests share session fixtures (built images, the podman service, the Slurm
#: cluster): with pytest-xdist all their files run on one worker; every other test file is
#: a unit of its own, so a module's shared hub starts once and its tests keep their order
ONE_WORKER_TIERS = ("containers", "slurm")
#: the template notebooks' tests go to workers one template at a time: each worker runs a
#: notebook once and its tests share that run (tests/templates/conftest.py, run_notebook)
NOTEBOOK_TESTS = "tests/templates/test_notebooks.py"
TEMPLATE_SLUGS = sorted(p.parent.name for p in TESTS.parent.glob("templates/*/template.yaml"))
#: the longest work first (file path or tier prefixes, in order), so that no long file starts
#: last and keeps the run waiting for one worker; the rest by number of tests
LONGEST_FIRST = (
    "containers",
    "slurm",
    "tests/templates/test_notebooks.py::quality-inspection",
    "tests/templates/test_notebooks.py",
    "tests/browser/",
    "tests/federation/",
    "tests/hub/",
    "tests/security/",
    "tests/templates/",
)


def work_order(scope: str, tests: int) -> tuple[int, int]:
    """Sort key of a unit of work: its place in :data:`LONGEST_FIRST`, then more tests first."""
    rank = next((i for i, p in enumerate(LONGEST_FIRST) if scope.startswith(p)), len(LONGEST_FIRST))
    return rank, -tests


def notebook_scope(nodeid: str) -> str:
    """``tests/templates/test_notebooks.py::SLUG`` for a test of template SLUG (the longest
    slug named in its parameters), the file for a test of none."""
    params = nodeid.partition("[")[2]
    slug = max((s for s in TEMPLATE_SLUGS if s in params), key=len, default="")
    return f"{NOTEBOOK_TESTS}::{slug}" if slug else NOTEBOOK_TESTS


def work_unit(nodeid: str) -> str:
    """The unit the scheduler hands out whole: a tier of :data:`ONE_WORKER_TIERS`, one
    template's notebook tests, else the test's file."""
    path = nodeid.split("::", 1)[0]
    parts = path.split("/")
    if len(parts) > 2 and parts[0] == "tests" and parts[1] in ONE_WORKER_TIERS:
        return parts[1]
    if path == NOTEBOOK_TESTS:
        return notebook_scope(nodeid)
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Distribute whole test files (whole tiers for :data:`ONE_WORKER_TIERS`) to workers,
    the longest first (:func:`work_order`).

    xdist's own ``--dist loadgroup`` marks do not reach the node ids under pytest 9, so the
    grouping is done here, by the scheduler that ``make test`` uses (``-n``)."""
    from xdist.scheduler import LoadScopeScheduling

    class TierScheduling(LoadScopeScheduling):
        ordered = False

        def _assign_work_unit(self, node: object) -> None:
            if not self.ordered:  # the first call: the queue is complete, nothing sent yet
                units = sorted(self.workqueue.items(), key=lambda u: work_order(u[0], len(u[1])))
                self.workqueue.clear()
                self.workqueue.update(units)
                self.ordered = True
            super()._assign_work_unit(node)

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return TierScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = _skipped_tiers()
    counts: Counter[str] = Counter()
    for item in items:
        tier = _tier(item.path)
        counts[tier] += 1
        if tier in KNOWN_TIERS:  # pytest -m "unit or booking" selects tiers
            item.add_marker(getattr(pytest.mark, tier))
        if tier in skips:
            item.add_marker(pytest.mark.skip(reason=f"tier '{tier}' skipped: {skips[tier]}"))
    config.stash[_COUNTS] = counts


_COUNTS = pytest.StashKey[Counter]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On an xdist worker: hand the tier counts and summary lines to the controller (which
    collects nothing)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["werkhub_tiers"] = dict(session.config.stash.get(_COUNTS, Counter()))
        output["werkhub_lines"] = session.config.stash.get(LINES, [])


def pytest_testnodedown(node: object, error: object) -> None:
    """On the xdist controller: every worker collected the same tests, so one's counts are
    everyone's; summary lines come from each worker."""
    config = getattr(node, "config", None)
    output = getattr(node, "workeroutput", {})
    if config is None:
        return
    found = output.get("werkhub_tiers")
    if found and _COUNTS not in config.stash:
        config.stash[_COUNTS] = Counter(found)
    for line in output.get("werkhub_lines", []):
        config.stash.setdefault(LINES, []).append(line)


#: seconds spent per (worker, unit of work), summed from every phase's report
_SPENT = pytest.StashKey[Counter]()


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    node = getattr(report, "node", None)  # set on the xdist controller: the worker
    config = getattr(node, "config", None)
    if node is None or config is None:
        return
    worker = getattr(getattr(node, "gateway", None), "id", "?")
    config.stash.setdefault(_SPENT, Counter())[(worker, work_unit(report.nodeid))] += (
        report.duration
    )


def _time_spent(terminalreporter: pytest.TerminalReporter) -> None:
    """Each worker's busy time and the longest units of work: where the run's wall time went."""
    spent = terminalreporter.config.stash.get(_SPENT, Counter())
    if not spent:
        return
    terminalreporter.section("werkhub test time by worker and unit of work")
    per_worker: Counter[str] = Counter()
    for (worker, _), seconds in spent.items():
        per_worker[worker] += seconds
    for worker, seconds in sorted(per_worker.items()):
        terminalreporter.write_line(f"{worker:<6} busy {seconds:7.0f} s")
    for (worker, unit), seconds in spent.most_common(25):
        terminalreporter.write_line(f"{seconds:7.0f} s  {worker:<6} {unit}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _time_spent(terminalreporter)
    counts = terminalreporter.config.stash.get(_COUNTS, Counter())
    skips = _skipped_tiers()
    terminalreporter.section("werkhub test tiers")
    for tier in KNOWN_TIERS:
        present = (TESTS / tier).is_dir()
        if tier in skips:
            state = f"SKIPPED: {skips[tier]}"
        elif not present:
            state = "not part of this tree yet"
        elif counts[tier] == 0:
            state = "not selected"
        else:
            state = f"{counts[tier]} test(s) collected"
        terminalreporter.write_line(f"{tier:<11} {state}")
    for line in terminalreporter.config.stash.get(LINES, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def pg_ctl() -> Path:
    """pg_ctl of the PostgreSQL the tests run (tests/postgres/server.py); skips without one."""
    if "postgres" in _skipped_tiers():
        pytest.skip(f"PostgreSQL backend skipped: {_skipped_tiers()['postgres']}")
    found = find_pg_ctl()
    if found is None:
        pytest.skip(f"PostgreSQL backend skipped: {NOT_INSTALLED}")
    return found


@pytest.fixture(scope="session")
def postgres_server(pg_ctl: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of the session's PostgreSQL server (role and database ``werkhub``)."""
    try:
        with running_postgres(tmp_path_factory.mktemp("pg-booking"), pg_ctl) as url:
            yield url
    except PostgresError as exc:
        pytest.fail(str(exc), pytrace=False)


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
