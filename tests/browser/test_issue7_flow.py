"""Issue 7 end to end in chromium: log in, book a GPU on the calendar page, spawn, JupyterLab
opens, the launcher's "Template gallery" runs ``gallery()``, "Open a copy" of a template,
run its first cells, ``booking()`` shows the booking, a report job's report opens from the
gallery; a second user sees none of it."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import BrowserHub, Shots, eventually, wait_for_lab

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
TEMPLATE = "predictive-maintenance-course"  # CPU only, seconds to run
FIRST_CELLS = 4  # the title (markdown) and the first three code cells


def run_cell(page: Page, code: str) -> None:
    """Type ``code`` into the visible notebook's last cell and run it until it has run."""
    cell = page.locator(".jp-NotebookPanel:visible .jp-Cell").last
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(3):  # a key press before the kernel connected is dropped: press again
        cell.locator(".cm-content").click()
        page.keyboard.press("Control+Enter")
        try:
            expect(prompt).to_have_text(re.compile(r"\[(\d+|\*)\]"), timeout=20_000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"the cell did not run: {prompt.inner_text()}")


def new_notebook(page: Page) -> None:
    page.locator(".jp-LauncherCard", has_text="Python 3").first.click()
    page.wait_for_selector(".jp-NotebookPanel:visible .jp-Cell .cm-content")
    expect(page.locator(".jp-StatusBar-TextItem", has_text="| Idle")).to_have_count(
        1, timeout=60_000
    )


def outputs_text(page: Page) -> str:
    return " ".join(page.locator(".jp-NotebookPanel:visible .jp-OutputArea").all_inner_texts())


def run_report_job(browser_hub: BrowserHub) -> int:
    """alice's small parameterised report notebook, run now as a job; its run id."""
    home = browser_hub.hub.state / "homes" / "alice"
    cells = [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "line = 7\n"},
        {"cell_type": "code", "metadata": {}, "source": 'print(f"Line {line} output {3 * line}")'},
    ]
    for cell in cells:
        cell.update(execution_count=None, outputs=[])
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (home / "shift-report.ipynb").write_text(json.dumps(notebook))
    with browser_hub.hub.client(browser_hub.tokens["alice"]) as api:
        reply = api.post(
            f"{API}/jobs",
            json={
                "name": "shift report",
                "notebook": "shift-report.ipynb",
                "parameters": {"line": 7},
                "schedule": {"kind": "cron", "cron": "0 6 * * 1-5"},
                "report": {"title": "Shift report line 7"},
            },
        )
        assert reply.status_code == 201, reply.text
        queued = api.post(f"{API}/jobs/{reply.json()['id']}/run")
        assert queued.status_code == 202, queued.text
        run_id = queued.json()["id"]

        def done() -> bool:
            return api.get(f"{API}/runs/{run_id}").json()["status"] in (
                "succeeded",
                "failed",
                "timed_out",
            )

        assert eventually(done, timeout=180)
        run = api.get(f"{API}/runs/{run_id}").json()
        assert run["status"] == "succeeded", api.get(f"{API}/runs/{run_id}/log").text
    return run_id


def test_book_spawn_gallery_copy_and_booking_widget(
    browser_hub: BrowserHub, login, shots: Shots
) -> None:
    base = browser_hub.url
    alice = login("alice")
    shots(alice, "hub-home")

    # 1. book a GPU on the calendar page, starting now
    alice.goto(f"{base}/services/werkhub/book")
    expect(alice.get_by_test_id("book-form")).to_be_visible()
    shots(alice, "booking-page", narrow=True)
    alice.get_by_test_id("book-type").select_option(value="H100")
    alice.get_by_test_id("book-count").fill("1")
    alice.get_by_test_id("book-now").check()
    alice.get_by_test_id("book-hours").fill("2")
    alice.get_by_test_id("book-submit").click()
    # the page books with a fetch after the click: wait for the ledger to have it
    with browser_hub.hub.client(browser_hub.tokens["alice"]) as api:
        assert eventually(lambda: api.get(f"{API}/bookings").json(), timeout=30)
        booked = api.get(f"{API}/bookings").json()
    assert [b["gpu_type"] for b in booked] == ["H100"], booked
    booking_id = booked[0]["id"]
    row = alice.get_by_test_id(f"booking-{booking_id}")
    expect(row).to_be_visible()
    shots(alice, "booked", narrow=True)

    # 2. spawn through the hub's form: the default takes the running booking
    alice.goto(f"{base}/hub/spawn")
    shots(alice, "spawn-form", narrow=True)
    alice.locator("form#spawn_form [type=submit]").click()
    alice.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=120_000)
    alice.wait_for_selector(".jp-Launcher", timeout=120_000)
    shots(alice, "jupyterlab")

    # 3. the launcher card opens a notebook that runs gallery()
    alice.locator(".jp-LauncherCard", has_text="Template gallery").click()
    card = alice.locator(".widget-vbox", has=alice.locator(f"[data-slug='{TEMPLATE}']")).last
    expect(card).to_be_visible(timeout=90_000)
    shots(alice, "gallery")

    # 4. open a copy; the widget copies it into the home folder and links the notebook
    card.get_by_role("button", name="Open a copy").click()
    link = alice.locator(".werkhub-opened a")
    expect(link).to_be_visible(timeout=60_000)
    shots(alice, "copied")
    popups = [p for p in alice.context.pages if p is not alice]
    if popups:  # the widget opened the copy itself
        copy = popups[-1]
    else:
        with alice.context.expect_page() as opened:
            link.click()
        copy = opened.value
    copy._werkhub_user = "alice"  # type: ignore[attr-defined]
    copy.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    expect(copy.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=60_000
    )
    # saved to disk: the first code cells ran, in order, without an error
    home = browser_hub.hub.state / "homes" / "alice"

    def run_first_cells() -> None:
        copy.locator(".jp-NotebookPanel .jp-Cell").first.click()
        for _ in range(FIRST_CELLS):
            copy.keyboard.press("Shift+Enter")

    def ran() -> list[dict]:
        copy.locator(".jp-NotebookPanel-toolbar [data-command='docmanager:save']").click()
        saved = json.loads(next(home.glob(f"{TEMPLATE}*/course.ipynb")).read_text())
        code = [c for c in saved["cells"] if c["cell_type"] == "code"][: FIRST_CELLS - 1]
        return code if all(c.get("execution_count") for c in code) else []

    for _ in range(3):  # key presses before the kernel connected are dropped: press again
        run_first_cells()
        if eventually(lambda: bool(ran()), timeout=60, every=2):
            break
    else:
        saved = json.loads(next(home.glob(f"{TEMPLATE}*/course.ipynb")).read_text())
        counts = [(c["cell_type"], c.get("execution_count")) for c in saved["cells"][:8]]
        raise AssertionError(f"the first cells did not run: {counts}")
    errors = [o for c in ran() for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, errors
    shots(copy, "template-first-cells")
    copy.close()

    # 5. booking() shows the booking
    alice.locator(".lm-TabBar-tab", has_text="Launcher").first.click()
    new_notebook(alice)
    run_cell(alice, "from werkhub_widgets import booking\nbooking()")
    expect(alice.locator(".jp-OutputArea", has_text=f"#{booking_id}").first).to_be_visible(
        timeout=60_000
    )
    shots(alice, "booking-widget")

    # 6. a scheduled report of alice's, run now: in her report gallery, opens in the browser
    run_id = run_report_job(browser_hub)
    alice.goto(f"{base}/services/werkhub/reports")
    card = alice.get_by_test_id(f"report-{run_id}")
    expect(card).to_be_visible()
    shots(alice, "reports", narrow=True)
    report_url = f"{base}{API}/reports/{run_id}"
    alice.goto(report_url)
    expect(alice.get_by_text("Line 7 output 21", exact=False).first).to_be_visible()
    shots(alice, "report-opened")

    # 7. bob sees none of alice's bookings or reports: pages, API and widget
    bob = login("bob")
    bob.goto(f"{base}/services/werkhub/book")
    expect(bob.get_by_test_id("book-form")).to_be_visible()
    expect(bob.get_by_test_id(f"booking-{booking_id}")).to_have_count(0)
    shots(bob, "booking-page-other-user")
    assert bob.request.get(f"{base}{API}/bookings/{booking_id}").status == 404
    bob.goto(f"{base}/services/werkhub/reports")
    expect(bob.get_by_test_id("no-reports")).to_be_visible()
    expect(bob.get_by_test_id(f"report-{run_id}")).to_have_count(0)
    shots(bob, "reports-other-user", narrow=True)
    assert bob.request.get(report_url).status == 404
    browser_hub.hub.spawn("bob", browser_hub.tokens["bob"])
    wait_for_lab(bob, f"{base}/user/bob/lab")
    new_notebook(bob)
    run_cell(bob, "from werkhub_widgets import booking\nbooking()")
    expect(bob.locator(".jp-OutputArea", has_text="Book")).not_to_have_count(0, timeout=60_000)
    bob.wait_for_timeout(1000)
    assert f"#{booking_id}" not in outputs_text(bob)
    shots(bob, "booking-widget-other-user")
