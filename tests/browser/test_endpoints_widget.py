"""Issue 15 in chromium: in JupyterLab, ``endpoints()`` registers the model of an MLflow run
in the user's ~ name space and deploys it, watches it become ready, tries it with the
registered input example; the endpoints page then shows it, and its requests plot moves
(without a reload) as more requests come in; delete from the page."""

from __future__ import annotations

import os

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import BrowserHub, Shots, wait_for_lab
from tests.browser.test_issue7_flow import new_notebook, run_cell
from tests.support.serving import invoke_body, register_tagged
from werkhub_widgets.tracking_client import TrackingClient

pytestmark = pytest.mark.hub
USER = "dora"  # a user of this test's own: the other browser tests keep theirs
MODEL = f"{USER}~press"
ENDPOINT = "press-run"


@pytest.fixture(scope="module")
def run_id(browser_hub: BrowserHub, tmp_path_factory: pytest.TempPathFactory) -> str:
    hub = browser_hub.hub
    password = f"{USER}-secret-{os.urandom(6).hex()}"
    made = hub.cli("users", "add", USER, "--password-stdin", stdin=password + "\n")
    assert made.returncode == 0, made.stdout + made.stderr
    browser_hub.passwords[USER] = password
    token = browser_hub.tokens[USER] = hub.create_user(USER)
    folder = tmp_path_factory.mktemp("widget-models")
    version = register_tagged(hub.url, token, USER, MODEL, 1, folder, alias="champion")
    tracking = TrackingClient(f"{hub.url}/services/mlflow", token)
    try:
        found = tracking.call(
            "GET", "model-versions/get", params={"name": MODEL, "version": version}
        )
    finally:
        tracking.close()
    return found["model_version"]["run_id"]


def invoke(browser_hub: BrowserHub, times: int) -> None:
    headers = {"Authorization": f"Bearer {browser_hub.tokens[USER]}"}
    with httpx.Client(timeout=60) as client:
        for _ in range(times):
            reply = client.post(
                f"{browser_hub.url}/endpoints/{USER}/{ENDPOINT}/invocations",
                json=invoke_body(),
                headers=headers,
            )
            assert reply.status_code == 200, reply.text


def test_deploy_from_the_widget_try_it_and_watch_the_plot_move(
    browser_hub: BrowserHub, run_id: str, login, shots: Shots
) -> None:
    hub, base = browser_hub.hub, browser_hub.url
    hub.spawn(USER, browser_hub.tokens[USER])
    lab = login(USER)
    wait_for_lab(lab, f"{base}/user/{USER}/lab")
    new_notebook(lab)
    run_cell(lab, "from werkhub_widgets import endpoints\nw = endpoints(watch_seconds=2)\nw")
    widget = lab.locator(".werkhub-endpoints")
    expect(widget).to_be_visible(timeout=60_000)
    expect(widget.locator(".werkhub-ep-list")).to_contain_text("No endpoints yet")

    # 1. the model of an MLflow run: registered as dora~press-run, deployed
    widget.get_by_role("button", name="MLflow run").click()
    widget.locator(".werkhub-ep-run input").fill(run_id)
    widget.locator(".werkhub-ep-register input").fill(ENDPOINT)
    expect(widget.locator(".werkhub-ep-name input")).to_have_value(ENDPOINT)
    shots(lab, "widget-filled")
    widget.locator(".werkhub-ep-deploy").click()
    expect(widget.locator(".werkhub-message")).to_contain_text(
        f"Endpoint {ENDPOINT} is starting with {USER}~{ENDPOINT} version 1", timeout=60_000
    )

    # 2. watching: the widget refreshes itself until the endpoint is ready
    expect(widget.locator(".werkhub-ep-state[data-state='ready']")).to_be_visible(timeout=120_000)
    shots(lab, "widget-ready")

    # 3. try it with the registered input example
    widget.locator(".werkhub-ep-try").click()
    expect(widget.locator(".werkhub-ep-result")).to_contain_text("predictions", timeout=60_000)
    expect(widget.locator(".werkhub-ep-answer")).to_contain_text("temperature")
    expect(widget.locator(".werkhub-requests-plot[data-requests='1']")).to_have_count(1)
    widget.locator(".werkhub-ep-answer").scroll_into_view_if_needed()
    shots(lab, "widget-tried")

    # 4. the endpoints page shows it; its requests plot moves as requests come in
    page = lab.context.new_page()
    page._werkhub_user = USER  # type: ignore[attr-defined]
    page.goto(f"{base}/services/werkhub/endpoints")
    key = f"{USER}-{ENDPOINT}"
    expect(page.get_by_test_id(f"state-{key}")).to_have_text("ready")
    plot = page.get_by_test_id(f"requests-plot-{key}")
    expect(plot).to_have_attribute("data-requests", "1")
    before = plot.locator("svg").inner_html()
    shots(page, "endpoints-page")
    invoke(browser_hub, 5)
    expect(plot).to_have_attribute("data-requests", "6", timeout=30_000)  # no reload
    assert plot.locator("svg").inner_html() != before
    expect(page.get_by_test_id(f"totals-{key}")).to_contain_text("6 requests, 0 errors")
    shots(page, "endpoints-page-moved", narrow=True)
    # the widget's own plot follows too
    expect(widget.locator(".werkhub-requests-plot[data-requests='6']")).to_have_count(
        1, timeout=30_000
    )
    widget.locator(".werkhub-requests-plot").scroll_into_view_if_needed()
    shots(lab, "widget-moved")

    # 5. delete from the page (after confirming); the widget sees it gone
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id(f"delete-{key}").click()
    expect(page.get_by_test_id("no-endpoints")).to_be_visible()
    shots(page, "endpoints-page-deleted")
    expect(widget.locator(".werkhub-ep-list")).to_contain_text("No endpoints yet", timeout=30_000)
    page.close()
    with hub.client(browser_hub.tokens[USER]) as api:
        api.delete(f"/hub/api/users/{USER}/server")
