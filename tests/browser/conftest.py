"""Browser tier: a real werkhub (simulated GPUs, two users) driven by Debian's chromium
through Playwright. Screenshots of every step go to ``.cache/artifacts/browser/<test>/``.

Chromium resolves no name but loopback (``--host-resolver-rules``) and every request a page
makes is recorded: a test fails if anything leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.hub import ROOT, Werkhub, make_werkhub

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / ".cache" / "artifacts" / "browser"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
WIDE = {"width": 1280, "height": 800}
NARROW = {"width": 400, "height": 800}
#: how often the JupyterLab front end polls for booking warnings in these tests (seconds)
POLL_SECONDS = 2
WARN_MINUTES = 30
USERS = ("alice", "bob", "carol")  # carol: the booking-warning test

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # the dev extra installs it; without it the tier cannot run
    sync_playwright = None  # type: ignore[assignment]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if sync_playwright is None:
        reason = "the playwright package is missing (pip install -e '.[dev]')"
    elif not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    for item in items:
        if reason and "tests/browser" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@dataclass
class BrowserHub:
    hub: Werkhub
    passwords: dict[str, str]
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.hub.url


# package scope: Playwright's sync API keeps an event loop running in the main thread
# while it is open, so it must be closed before the other tiers' tests (asyncio.run) run
@pytest.fixture(scope="package")
def browser_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserHub]:
    hub = make_werkhub(
        tmp_path_factory.mktemp("browser-hub"),
        extra={
            "booking": {"warn_minutes": WARN_MINUTES, "tick_seconds": 1},
            "spawner": {"environment": {"WERKHUB_LAB_POLL_SECONDS": str(POLL_SECONDS)}},
        },
    )
    hub.state.parent.mkdir(parents=True, exist_ok=True)
    hub.start()
    try:
        passwords, tokens = {}, {}
        for name in USERS:
            passwords[name] = f"{name}-secret-{os.urandom(6).hex()}"
            made = hub.cli("users", "add", name, "--password-stdin", stdin=passwords[name] + "\n")
            assert made.returncode == 0, made.stdout + made.stderr
            tokens[name] = hub.create_user(name)
        yield BrowserHub(hub, passwords, tokens)
    finally:
        hub.stop()


@pytest.fixture(scope="package")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh, temporary --user-data-dir
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@dataclass
class Shots:
    """Numbered screenshots of one test's steps."""

    folder: Path
    taken: list[Path] = field(default_factory=list)

    def __call__(self, page: Page, step: str, narrow: bool = False) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{page_owner(page)}-{step}.png"
        capture(page, path)
        self.taken.append(path)
        if narrow:
            wide = page.viewport_size or WIDE
            page.set_viewport_size(NARROW)
            page.wait_for_timeout(300)
            narrow_path = path.with_name(path.stem + "-narrow.png")
            capture(page, narrow_path, full_page=True)
            self.taken.append(narrow_path)
            page.set_viewport_size(wide)
        return path


def capture(page: Page, path: Path, full_page: bool = False) -> None:
    """A screenshot of what the person sees. A tab in the background (a pop-up opened by a
    click) cannot be captured by headless chromium: bring it to the front, and try again
    once the page has painted."""
    for attempt in range(3):
        try:
            page.bring_to_front()
            page.screenshot(path=str(path), full_page=full_page)
            return
        except PlaywrightError:
            if attempt == 2:
                raise
            page.wait_for_timeout(1000)


def page_owner(page: Page) -> str:
    return getattr(page, "_werkhub_user", "anon")


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Shots:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return Shots(folder)


@pytest.fixture
def login(
    chromium: Browser, browser_hub: BrowserHub, shots: Shots, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Page]]:
    """``login(name)``: a fresh browser context for that user, logged in at /hub/login."""
    contexts: list[BrowserContext] = []
    foreign: list[str] = []

    def watch(url: str) -> None:
        host = urlsplit(url).hostname
        if url.startswith(("http:", "https:", "ws:", "wss:")) and host != "127.0.0.1":
            foreign.append(url)

    def log_in(name: str) -> Page:
        context = chromium.new_context(viewport=WIDE, locale="en-GB")
        context.set_default_timeout(60_000)
        context.on("request", lambda req: watch(req.url))
        contexts.append(context)
        page = context.new_page()
        page._werkhub_user = name  # type: ignore[attr-defined]
        page.goto(f"{browser_hub.url}/hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", browser_hub.passwords[name])
        shots(page, "login")
        page.click("#login_submit")
        page.wait_for_url(re.compile(r".*/(hub/(home|spawn.*)|user/.*)$"))
        return page

    yield log_in
    if request.node.stash.get(_FAILED, False):  # what every open page showed at the failure
        for context in contexts:
            for page in context.pages:
                shots(page, "FAILED")
    for context in contexts:
        context.close()
    assert not foreign, f"requests left 127.0.0.1: {foreign[:5]}"


def wait_for_lab(page: Page, url: str) -> None:
    """Open JupyterLab at ``url`` and wait until its launcher is shown."""
    page.goto(url)
    page.wait_for_selector(".jp-Launcher", timeout=120_000)


def eventually(check: Callable[[], bool], timeout: float = 30, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return check()
