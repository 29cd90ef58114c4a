"""Pure pieces of the federation pages and widget (no hub): who sees which forms, the list
page's sections, figures, the rounds chart and table, MLflow links, and the templates
rendered from the API's shapes (docs/federated-learning.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from werkhub.auth.hub import HubUser
from werkhub.orgs.rules import Actor
from werkhub.service.federation_pages import (
    count_parties,
    figure,
    metric_names,
    mlflow_url,
    model_url,
    roles,
    rounds_chart,
    run_view,
    size,
    sort_federations,
)
from werkhub.service.pages.views import ENV
from werkhub_widgets.federation import run_html

HUB = "/"
ROUNDS = [
    {"round": 1, "parties": 3, "loss": 0.91, "metrics": {"macro_f1": 0.41, "accuracy": 0.5}},
    {"round": 2, "parties": 2, "loss": 0.52, "metrics": {"macro_f1": 0.77}},
]


def federation(**over: Any) -> dict[str, Any]:
    fed = {
        "id": 7,
        "name": "quality",
        "owner": "ann",
        "owner_org": "maker",
        "app": {"template": "federated-quality-inspection"},
        "strategy": "fedavg",
        "rounds": 5,
        "min_parties": 2,
        "secure_aggregation": False,
        "secure_aggregation_setting": None,
        "state": "open",
        "parties": [
            {
                "org": "supplier",
                "state": "accepted",
                "user": "sue",
                "gpus": 0,
                "node": "connected",
                "traffic": {"sent": 1500, "received": 2_400_000},
            },
            {"org": "soft", "state": "invited", "gpus": 0, "node": None},
            {"org": "gone", "state": "left", "gpus": 0, "node": None},
        ],
        "created": "2026-01-05T10:00:00+00:00",
    }
    return {**fed, **over}


def run(**over: Any) -> dict[str, Any]:
    found = {
        "id": 3,
        "federation_id": 7,
        "flower_run_id": 123456789,
        "status": "finished",
        "message": "",
        "planned_rounds": 2,
        "secure_aggregation": False,
        "parties": ["maker", "supplier"],
        "rounds": ROUNDS,
        "started": "2026-01-05T10:05:00+00:00",
        "ended": "2026-01-05T10:09:00+00:00",
        "mlflow": {"experiment_id": "4", "run_id": "abc123"},
        "party_mlflow": {"experiment_id": "9", "run_id": "def456"},
        "model": {"name": "ann~federation-quality", "version": "2"},
    }
    return {**found, **over}


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        (Actor("ann", org="maker"), (True, False, False, False)),  # creator, not an admin
        (Actor("max", org="maker", org_admin=True), (True, True, False, False)),
        (Actor("mo", org="maker"), (False, False, False, False)),  # another member
        (Actor("sue", org="supplier", org_admin=True), (False, False, False, True)),
        (Actor("sam", org="supplier"), (False, False, False, False)),
        (Actor("sol", org="soft", org_admin=True), (False, False, True, False)),
        (Actor("gil", org="gone", org_admin=True), (False, False, False, False)),
        (Actor("root", platform_admin=True), (True, True, False, False)),
    ],
)
def test_roles_follow_the_api_rules(actor: Actor, expected: tuple[bool, ...]) -> None:
    may = roles(federation(), actor)
    assert (may.owns, may.invites, may.invited_admin, may.party_admin) == expected


def test_sections_of_the_list_page() -> None:
    owned = federation(id=1)
    invited = federation(id=2, owner_org="other", parties=[{"org": "maker", "state": "invited"}])
    party = federation(id=3, owner_org="other", parties=[{"org": "maker", "state": "accepted"}])
    left = federation(id=4, owner_org="other", parties=[{"org": "maker", "state": "left"}])
    found = sort_federations([owned, invited, party, left], "maker")
    assert [[f["id"] for f in found[k]] for k in ("owned", "invited", "party", "other")] == [
        [1],
        [2],
        [3],
        [4],
    ]
    everything = sort_federations([owned, invited], None)  # a platform admin of no org
    assert [f["id"] for f in everything["other"]] == [1, 2] and not everything["owned"]
    assert count_parties(federation()) == {"accepted": 1, "invited": 1, "left": 1}


def test_figures_metrics_and_links() -> None:
    assert figure(0.123456) == "0.1235" and figure(12) == "12"
    assert figure(None) == figure(True) == figure(float("nan")) == figure("x") == "-"
    assert size(812) == "812 B" and size(1500) == "1.5 kB" and size(2_400_000) == "2.4 MB"
    assert size(None) == size(-1) == "-" and size(7e12) == "7000.0 GB"
    assert metric_names(ROUNDS) == ["accuracy", "macro_f1"]
    assert mlflow_url(HUB, run()) == "/services/mlflow/#/experiments/4/runs/abc123"
    assert mlflow_url(HUB, run(mlflow={})) is None
    assert model_url(HUB, run()) == "/services/mlflow/#/models/ann~federation-quality/versions/2"
    assert model_url(HUB, run(model=None)) is None
    view = run_view(HUB, run(status="running", rounds=[]))
    assert not view["ended"] and view["chart"] == "" and view["rounds"] == []


def test_rounds_chart_lines_and_gaps() -> None:
    svg = rounds_chart(ROUNDS)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2  # loss, macro_f1
    assert "round 2 loss: 0.52" in svg and "accuracy" in svg  # one point: a dot, no line
    assert rounds_chart([]) == ""
    bad = rounds_chart([{"round": 1, "parties": 1, "loss": float("inf"), "metrics": {}}])
    assert "inf" not in bad


def render(name: str, **ctx: Any) -> str:
    user = HubUser(name=ctx.pop("viewer", "ann"), admin=False, groups=[], kind="user")
    return ENV.get_template(name).render(
        user=user,
        prefix="/services/werkhub",
        api="/services/werkhub/api",
        hub="/",
        csrf="t",
        tz="UTC",
        local=lambda v, fmt="%a %d %b %H:%M": (
            datetime.fromisoformat(str(v)).astimezone(UTC).strftime(fmt)
        ),
        page=name.removesuffix(".html"),
        figure=figure,
        size=size,
        **ctx,
    )


def test_the_federation_page_from_the_api_shapes() -> None:
    fed = federation()
    owner = Actor("max", org="maker", org_admin=True)
    page = render(
        "federation.html",
        fed=fed,
        may=roles(fed, owner),
        actor=owner,
        runs=[run_view(HUB, run()), run_view(HUB, run(id=4, status="running", rounds=[]))],
        runs_problem=None,
    )
    for part in (
        'data-testid="fed-invite"',
        'data-org-call="POST /federations/7/revoke" data-body=\'{"org": "supplier"}\'',
        'data-fed-run="/federations/7/runs"',
        'href="/services/werkhub/federations/7/flwr/config.toml"',
        'href="/services/mlflow/#/experiments/4/runs/abc123"',
        "ann~federation-quality version 2",
        'href="/services/mlflow/#/experiments/9/runs/def456"',
        "1.5 kB / 2.4 MB",
        "2 of 2",
        "off: on from 3 parties",
        'data-live="/services/werkhub/federations/7/runs/4/live"',
        'data-testid="run-stop"',
        "<td>0.77</td>",
        "Waiting for the first round.",
        'src="/services/werkhub/static/werkhub.js"',
        'src="/services/werkhub/static/federations.js"',
    ):
        assert part in page, part
    assert 'revoke-gone"' not in page  # a party that left cannot be revoked
    assert page.count("data-live=") == 1  # the finished run is not fetched again
    assert 'data-testid="fed-accept"' not in page and 'data-testid="fed-leave"' not in page
    party = Actor("sue", org="supplier", org_admin=True)
    seen = render(
        "federation.html", fed=fed, may=roles(fed, party), actor=party, runs=[], runs_problem=None
    )
    assert 'data-testid="fed-leave"' in seen and 'data-testid="fed-start"' not in seen
    assert "flwr/config.toml" not in seen and 'data-testid="fed-invite"' not in seen
    assert "revoke-" not in seen and 'data-testid="fed-runs-none"' in seen
    invited = Actor("sol", org="soft", org_admin=True)
    offer = render(
        "federation.html",
        fed=fed,
        may=roles(fed, invited),
        actor=invited,
        runs=[],
        runs_problem=None,
    )
    assert 'data-path="/federations/7/accept"' in offer and 'data-testid="fed-decline"' in offer


def test_the_list_page_from_the_api_shapes() -> None:
    mine = federation(id=1, name="mine", owner_org="soft", parties=[])
    offer = federation(
        id=2, name="offer", owner_org="other", parties=[{"org": "soft", "state": "invited"}]
    )
    actor = Actor("sol", org="soft", org_admin=True)
    page = render(
        "federations.html",
        sections=sort_federations([mine, offer], "soft"),
        roles={f["id"]: roles(f, actor) for f in (mine, offer)},
        counts={f["id"]: count_parties(f) for f in (mine, offer)},
        actor=actor,
        problem=None,
        strategies=(("fedavg", "FedAvg"),),
        templates=("federated-quality-inspection",),
    )
    assert 'data-testid="fed-accept-2"' in page and 'data-testid="fed-decline-2"' in page
    assert 'data-testid="fed-accept-1"' not in page and 'data-testid="fed-create"' in page
    assert "<option>federated-quality-inspection</option>" in page
    assert not re.search(r"https?://", page)


def test_widget_rounds_and_run_html() -> None:
    html = run_html(run(), "/services/mlflow/")
    assert "data-status='finished'" in html and "data-rounds='2'" in html
    assert "<td>0.41</td>" in html and "<td>-</td>" in html  # round 2 has no accuracy
    assert "#/experiments/4/runs/abc123" in html and "ann~federation-quality" in html
    assert html.count("<polyline") == 2
    failed = run_html(
        run(status="failed", message="only 1 of 3 parties <replied>", rounds=[], model=None),
        "/m/",
    )
    assert "wh-error" in failed and "&lt;replied&gt;" in failed and "No round finished" in failed
