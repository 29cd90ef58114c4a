"""Accounts: no takeover at sign-up, deleted users stay deleted, one safe name rule.

Against a real ``werkhub up`` of this module's own (hub, proxy, service, MLflow): its
escape hatch moves the user store's clock seam (``werkhub.auth.userstore.now``) by the
seconds written to a file, and lets the hub "forget" to tell the service about deleting
users whose name starts with ``offline-`` (as if the service were down then), so the
service's own reconciliation has to catch those.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tornado import web

from tests.hub.test_jobs_api import notebook
from tests.support.hub import Werkhub, make_werkhub
from tests.support.wait import wait_for

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"
PASSWORD = "a-long-secret-1"
UNSAFE = [
    "alice?x",
    "alice/x",
    "alice%3Fx",
    "a..b",
    "..",
    "Alice",
    "\u0430lice",  # Cyrillic a
    "alic\u0435",  # Cyrillic e
    "\uff41lice",  # fullwidth a
]

HATCH = """
import pathlib
import time

import werkhub.auth.native
import werkhub.auth.userstore

_offset = pathlib.Path({offset!r})


def _now():
    text = _offset.read_text().strip() if _offset.exists() else ""
    return time.time() + float(text or 0)


werkhub.auth.userstore.now = _now
_notice = getattr(werkhub.auth.native, "DeletionNotice", None)  # (absent before issue 12)
if _notice is not None:
    _notify = _notice.notify_service

    async def _maybe_notify(self, name):
        if name.startswith("offline-"):
            return None  # the service "was down": only its reconciliation can notice
        return await _notify(self, name)

    _notice.notify_service = _maybe_notify
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Werkhub]:
    extra = {"jobs": {"tick_seconds": 1}, "booking": {"tick_seconds": 1}}
    werkhub = make_werkhub(tmp_path_factory.mktemp("accounts"), extra)
    werkhub.state.parent.mkdir(parents=True, exist_ok=True)
    hatch = werkhub.config.parent / "jupyterhub_config.d"
    hatch.mkdir()
    (hatch / "20-accounts.py").write_text(HATCH.format(offset=str(offset_file(werkhub))))
    werkhub.start()
    yield werkhub
    werkhub.stop()


def offset_file(hub: Werkhub) -> Path:
    return hub.config.parent / "clock-offset"


class Browser:
    """A person at the hub's pages: a cookie jar and the xsrf field of each form."""

    def __init__(self, hub: Werkhub) -> None:
        self.http = httpx.Client(base_url=hub.url, follow_redirects=True, timeout=30)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def xsrf(self, path: str = "/hub/login") -> str:
        match = re.search(r'name="_xsrf" value="([^"]+)"', self.http.get(path).text)
        assert match, f"no form on {path}"
        return match.group(1)

    def post(self, path: str, data: dict[str, str], form: str | None = None) -> httpx.Response:
        return self.http.post(path, data={**data, "_xsrf": self.xsrf(form or "/hub/login")})

    def signup(self, name: str, password: str = PASSWORD, invite: str = "") -> httpx.Response:
        data = {"username": name, "password": password, "password_repeat": password}
        if invite:
            data["invite"] = invite
        return self.post("/hub/signup", data)

    def login(self, name: str, password: str = PASSWORD) -> str | None:
        """The name the hub then says we are, or None if the login failed."""
        self.post("/hub/login", {"username": name, "password": password})
        me = self.http.get("/hub/api/user")
        return me.json()["name"] if me.status_code == 200 else None


def page_action(admin: Browser, name: str, action: str) -> httpx.Response:
    """A button on the admin page /hub/werkhub/signups."""
    page = "/hub/werkhub/signups"
    return admin.post(page, {"name": name, "action": action}, form=page)


def stored(hub: Werkhub, table: str, name: str) -> int:
    with sqlite3.connect(hub.state / "users.sqlite") as db:
        return db.execute(f"SELECT count(*) FROM {table} WHERE name=?", (name,)).fetchone()[0]


def service_db(hub: Werkhub, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(hub.state / "werkhub.sqlite") as db:
        return db.execute(query, args).fetchall()


def invite(hub: Werkhub, name: str) -> str:
    result = hub.cli("users", "invite", name)
    assert result.returncode == 0, result.stderr
    link = re.search(r"(http\S+/hub/signup\?invite=\S+)", result.stdout)
    assert link, result.stdout
    return link.group(1)


def code_of(link: str) -> str:
    return link.split("invite=", 1)[1]


# ---- sign-up: no takeover -----------------------------------------------------------
def test_signup_cannot_take_over_an_admin_created_account(hub: Werkhub) -> None:
    with hub.admin() as api:
        made = api.post("/hub/api/users/carol", json={"admin": True})
        assert made.status_code == 201, made.text
    with Browser(hub) as attacker:
        refused = attacker.signup("carol")
        assert refused.status_code == 400
        assert "belongs to an existing account" in refused.text
        assert "invitation" in refused.text
        assert attacker.login("carol") is None
        admin = attacker.signup("admin")  # the first administrator, too
        assert admin.status_code == 400 and "existing account" in admin.text
    assert stored(hub, "users", "carol") == 0 and stored(hub, "users", "admin") == 1


def test_invitation_claims_the_account_once(hub: Werkhub) -> None:
    link = invite(hub, "carol")
    code = code_of(link)
    assert code.encode() not in (hub.state / "users.sqlite").read_bytes()  # only a hash
    with Browser(hub) as carol:
        page = carol.http.get(link.removeprefix(hub.url))
        assert page.status_code == 200 and 'value="carol"' in page.text
        assert "readonly" in page.text
        other = carol.signup("mallory", invite=code)  # the code is carol's, not any name's
        assert other.status_code == 400 and stored(hub, "users", "mallory") == 0
        done = carol.signup("carol", invite=code)
        assert done.status_code == 200, done.text
        assert "account is ready" in done.text
        assert carol.login("carol") == "carol"
        assert carol.http.get("/hub/api/user").json()["admin"] is True
    with Browser(hub) as attacker:
        again = attacker.signup("carol", password="attackers-pass", invite=code)
        assert again.status_code == 400 and "not valid" in again.text
        assert attacker.login("carol", "attackers-pass") is None
    with Browser(hub) as carol:
        assert carol.login("carol") == "carol"


def test_expired_and_revoked_invitations_fail(hub: Werkhub) -> None:
    """On the admin page: invite, let the seam pass the expiry, revoke."""
    with hub.admin() as api:
        assert api.post("/hub/api/users/erin").status_code == 201
    assert hub.first_password
    with Browser(hub) as admin:
        assert admin.login("admin", hub.first_password) == "admin"
        page = admin.http.get("/hub/werkhub/signups")
        assert page.status_code == 200 and "erin" in page.text
        made = page_action(admin, "erin", "invite")
        assert made.status_code == 200, made.text
        link = re.search(r'<code id="invitation-link">([^<]+)</code>', made.text)
        assert link, made.text
        code = code_of(link.group(1))
        assert code not in admin.http.get("/hub/werkhub/signups").text  # shown once
        offset_file(hub).write_text(str(8 * 86400))
        try:
            with Browser(hub) as erin:
                late = erin.signup("erin", invite=code)
                assert late.status_code == 400 and "expired" in late.text
                assert erin.http.get(link.group(1).removeprefix(hub.url)).status_code == 400
        finally:
            offset_file(hub).write_text("0")
        assert stored(hub, "users", "erin") == 0
        made = page_action(admin, "erin", "invite")
        second = re.search(r'<code id="invitation-link">([^<]+)</code>', made.text)
        assert second
        revoked = page_action(admin, "erin", "revoke")
        assert "Revoked 1 invitation" in revoked.text
    with Browser(hub) as erin:
        refused = erin.signup("erin", invite=code_of(second.group(1)))
        assert refused.status_code == 400 and "not valid" in refused.text
    assert stored(hub, "users", "erin") == 0


# ---- deleting a user ----------------------------------------------------------------
def make_user_with_things(hub: Werkhub, name: str) -> dict[str, Any]:
    """An account with a password, a token, a scheduled job, a running run, a future
    booking and an MLflow account."""
    with hub.admin() as api:
        assert api.post(f"/hub/api/users/{name}").status_code == 201
    link = invite(hub, name)
    with Browser(hub) as person:
        assert person.signup(name, invite=code_of(link)).status_code == 200
    home = hub.state / "homes" / name
    home.mkdir(parents=True, exist_ok=True)
    (home / "slow.ipynb").write_text(
        json.dumps(notebook("import time\ntime.sleep(seconds)", parameters="seconds = 120"))
    )
    with hub.admin() as api:
        token = api.post(f"/hub/api/users/{name}/tokens", json={"note": "t"}).json()["token"]
    start = (datetime.now(UTC) + timedelta(hours=30)).replace(minute=0, second=0, microsecond=0)
    with hub.client(token) as api:
        job = api.post(
            f"{API}/jobs",
            json={
                "name": "nightly",
                "notebook": "slow.ipynb",
                "schedule": {"kind": "cron", "cron": "0 6 * * *"},
            },
        )
        assert job.status_code == 201, job.text
        booking = api.post(
            f"{API}/bookings",
            json={
                "gpu_type": "L40S",
                "count": 1,
                "start": start.isoformat(),
                "duration_minutes": 30,
            },
        )
        assert booking.status_code == 201, booking.text
        ml = api.get(
            "/services/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1}
        )
        assert ml.status_code == 200, ml.text
    return {"token": token, "job": job.json()["id"], "booking": booking.json()["id"]}


def mlflow_accounts(hub: Werkhub) -> set[str]:
    with sqlite3.connect(hub.state / "mlflow" / "auth.db") as db:
        return {r[0] for r in db.execute("SELECT username FROM users")}


def test_deleted_user_loses_login_token_jobs_bookings_and_mlflow(hub: Werkhub) -> None:
    dan = make_user_with_things(hub, "dan")
    with hub.client(dan["token"]) as api:
        run = api.post(f"{API}/jobs/{dan['job']}/run").json()
        wait_for(
            lambda: api.get(f"{API}/runs/{run['id']}").json()["status"] == "running",
            timeout=90,
            what="dan's run to start",
        )
    assert "dan" in mlflow_accounts(hub)
    with hub.admin() as api:
        gone = api.delete("/hub/api/users/dan")
        assert gone.status_code == 204, gone.text
    with Browser(hub) as person:
        assert person.login("dan") is None
    with hub.client(dan["token"]) as api:
        assert api.get("/hub/api/user").status_code in (401, 403)
        assert api.get(f"{API}/me").status_code in (401, 403)
        assert api.get(f"{API}/jobs").status_code in (401, 403)
    assert stored(hub, "users", "dan") == 0 and stored(hub, "invitations", "dan") == 0
    assert not (hub.state / "homes" / "dan").exists()  # removed by the purge
    ((deleted, paused, next_fire, owner),) = service_db(
        hub, "SELECT deleted, paused, next_fire, owner FROM jobs WHERE id=?", dan["job"]
    )
    assert deleted is not None and paused and next_fire is None and owner.startswith("~dan~")
    with hub.admin() as api:
        assert dan["job"] not in [j["id"] for j in api.get(f"{API}/jobs?all=true").json()]
        ended = wait_for(
            lambda: (r := api.get(f"{API}/runs/{run['id']}").json())["status"] != "running" and r,
            what="the running run to stop",
        )
        assert ended["status"] in ("interrupted", "cancelled", "failed")
        booking = api.get(f"{API}/bookings/{dan['booking']}").json()
        assert booking["state"] == "cancelled"
    assert "dan" not in mlflow_accounts(hub)
    # deleted, paused and nothing scheduled: the scheduler never queues it again
    assert (
        service_db(
            hub,
            "SELECT id FROM job_runs WHERE job_id=? AND status IN ('queued', 'waiting_gpu')",
            dan["job"],
        )
        == []
    )


def test_recreated_name_starts_clean(hub: Werkhub) -> None:
    with hub.admin() as api:
        if api.get("/hub/api/users/dan").status_code == 200:
            api.delete("/hub/api/users/dan")
        assert api.post("/hub/api/users/dan").status_code == 201
        token = api.post("/hub/api/users/dan/tokens", json={"note": "t"}).json()["token"]
    with Browser(hub) as person:
        assert person.login("dan") is None  # the old password is gone
    assert stored(hub, "users", "dan") == 0 and stored(hub, "invitations", "dan") == 0
    with hub.client(token) as api:
        assert api.get(f"{API}/jobs").json() == []
        assert api.get(f"{API}/reports").json() == []
        assert api.get(f"{API}/bookings").json() == []
        assert api.get(f"{API}/runs/1").status_code == 404
        # the MLflow gateway had set up the old dan's account (deleted since): the new
        # dan's first request gets an account of its own at once, not a 401
        search = api.get(
            "/services/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 10}
        )
        assert search.status_code == 200, search.text
        names = [e["name"] for e in search.json().get("experiments", [])]
        assert not [n for n in names if n.startswith("dan/")]  # the old dan's stay hidden
    assert "dan" in mlflow_accounts(hub)
    with Browser(hub) as attacker:
        assert attacker.signup("dan").status_code == 400  # exists: only an invitation


def test_renaming_is_refused_and_changes_nothing(hub: Werkhub) -> None:
    """A rename would leave the password, home, jobs and bookings under the old name (and
    the service would take it for a deletion): refused with a reason, other edits pass."""
    with hub.admin() as api:
        assert api.post("/hub/api/users/fay").status_code == 201
    with Browser(hub) as person:
        assert person.signup("fay", invite=code_of(invite(hub, "fay"))).status_code == 200
    home = hub.state / "homes" / "fay"
    home.mkdir(parents=True, exist_ok=True)
    (home / "notes.txt").write_text("kept")
    with hub.admin() as api:
        refused = api.patch("/hub/api/users/fay", json={"name": "faye"})
        assert refused.status_code == 400, refused.text
        assert "does not rename users" in refused.json()["message"]
        assert api.get("/hub/api/users/faye").status_code == 404
        same = api.patch("/hub/api/users/fay", json={"name": "fay", "admin": False})
        assert same.status_code == 200, same.text
        assert api.patch("/hub/api/users/nobody-here", json={"name": "x"}).status_code == 404
    with Browser(hub) as person:
        assert person.login("fay") == "fay"
    assert (home / "notes.txt").read_text() == "kept"
    token = hub.create_user("gil")
    with hub.client(token) as api:  # only admins may edit users at all
        assert api.patch("/hub/api/users/fay", json={"name": "gil2"}).status_code == 403


def test_deletion_the_service_missed_is_caught_by_reconciliation(hub: Werkhub) -> None:
    eve = make_user_with_things(hub, "offline-eve")
    with hub.admin() as api:
        assert api.delete("/hub/api/users/offline-eve").status_code == 204
    with Browser(hub) as person:
        assert person.login("offline-eve") is None
    wait_for(
        lambda: service_db(hub, "SELECT deleted FROM jobs WHERE id=?", eve["job"])[0][0],
        what="the reconciliation to delete the job",
    )
    with hub.admin() as api:
        booking = api.get(f"{API}/bookings/{eve['booking']}").json()
        assert booking["state"] == "cancelled"
    wait_for(lambda: "offline-eve" not in mlflow_accounts(hub), what="MLflow account gone")


def test_name_deleted_and_recreated_unnoticed_keeps_only_the_new_accounts_jobs(
    hub: Werkhub,
) -> None:
    old = make_user_with_things(hub, "offline-fay")
    with hub.admin() as api:
        assert api.delete("/hub/api/users/offline-fay").status_code == 204
        assert api.post("/hub/api/users/offline-fay").status_code == 201
        token = api.post("/hub/api/users/offline-fay/tokens", json={}).json()["token"]
    # the old account's purge ends with its bookings: wait for it. A check that read the
    # hub's list between the deletion and the new account saw a plain deletion and removed
    # the home too (correct then); either way the new person then writes their notebook.
    wait_for(
        lambda: (
            service_db(hub, "SELECT user FROM bookings WHERE id=?", old["booking"])[0][0]
            != "offline-fay"
        ),
        what="the old account's bookings to go",
    )
    home = hub.state / "homes" / "offline-fay"
    home.mkdir(parents=True, exist_ok=True)
    (home / "slow.ipynb").write_text(json.dumps(notebook("print('new')")))
    time.sleep(1.1)  # the new account's rows come after its creation second
    with hub.client(token) as api:
        new = api.post(
            f"{API}/jobs",
            json={
                "name": "fresh",
                "notebook": "slow.ipynb",
                "schedule": {"kind": "cron", "cron": "0 6 * * *"},
            },
        )
        assert new.status_code == 201, new.text
    wait_for(
        lambda: service_db(hub, "SELECT deleted FROM jobs WHERE id=?", old["job"])[0][0],
        what="the old account's job to go",
    )
    time.sleep(3)  # a few more reconciliations
    with hub.client(token) as api:
        assert [j["name"] for j in api.get(f"{API}/jobs").json()] == ["fresh"]


def test_only_admins_and_the_hub_remove_a_users_data(hub: Werkhub) -> None:
    ann = hub.create_user("ann")
    bob = hub.create_user("bob")
    home = hub.state / "homes" / "bob"
    home.mkdir(parents=True, exist_ok=True)
    (home / "keep.ipynb").write_text(json.dumps(notebook("x = 1")))
    with hub.client(bob) as api:
        job = api.post(
            f"{API}/jobs",
            json={
                "name": "keep",
                "notebook": "keep.ipynb",
                "schedule": {"kind": "cron", "cron": "0 6 * * *"},
            },
        )
        assert job.status_code == 201, job.text
    with hub.client(ann) as api:
        refused = api.delete(f"{API}/admin/users/bob")
        assert refused.status_code == 403 and "administrators" in refused.json()["detail"]
    with hub.client(bob) as api:
        assert api.get(f"{API}/jobs/{job.json()['id']}").json()["paused"] is False


# ---- names ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused_everywhere_they_enter(hub: Werkhub, name: str) -> None:
    with Browser(hub) as person:
        reply = person.signup(name)
        assert reply.status_code == 400, reply.text
        assert "not a valid user name" in reply.text
    with hub.admin() as api:
        many = api.post("/hub/api/users", json={"usernames": [name]})
        assert many.status_code == 400, many.text
        if "/" not in name and name != "..":  # (those never reach the hub as one segment)
            one = api.post(f"/hub/api/users/{quote(name, safe='')}")
            assert one.status_code == 400, one.text
        names = {u["name"] for u in api.get("/hub/api/users").json()}
    assert name not in names and name.lower() not in names  # not folded onto "alice" either
    cli = hub.cli("users", "add", name)
    assert cli.returncode == 1 and "not a valid user name" in cli.stderr
    with sqlite3.connect(hub.state / "users.sqlite") as db:
        assert db.execute("SELECT count(*) FROM users WHERE name=?", (name,)).fetchone()[0] == 0


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_group_names_are_refused_on_the_hub_api(hub: Werkhub, name: str) -> None:
    """The admin page creates groups through these calls: a bad name is refused with the
    rule, and a list with one bad name creates none of its groups."""
    with hub.admin() as api:
        many = api.post("/hub/api/groups", json={"groups": ["fine-team", name]})
        assert many.status_code == 400, many.text
        assert "group name" in many.json()["message"]
        if "/" not in name and name != "..":  # (those never reach the hub as one segment)
            one = api.post(f"/hub/api/groups/{quote(name, safe='')}")
            assert one.status_code == 400, one.text
            assert "group name" in one.json()["message"]
        groups = {g["name"] for g in api.get("/hub/api/groups").json()}
    assert name not in groups and "fine-team" not in groups


def test_safe_group_names_are_created_as_before(hub: Werkhub) -> None:
    with hub.admin() as api:
        one = api.post("/hub/api/groups/quality.line-2")
        assert one.status_code == 201, one.text
        many = api.post("/hub/api/groups", json={"groups": ["maint_a", "maint-b"]})
        assert many.status_code == 201, many.text
        again = api.post("/hub/api/groups/quality.line-2")
        assert again.status_code == 409  # the hub's own answers stay
        groups = {g["name"] for g in api.get("/hub/api/groups").json()}
        for name in ("quality.line-2", "maint_a", "maint-b"):
            assert api.delete(f"/hub/api/groups/{name}").status_code == 204
    assert {"quality.line-2", "maint_a", "maint-b"} <= groups


def test_oidc_names_are_refused_not_mapped() -> None:
    from traitlets.config import Config

    from werkhub.auth.oidc import WerkhubOIDCAuthenticator

    c = Config()
    c.GenericOAuthenticator.username_claim = "preferred_username"
    c.GenericOAuthenticator.manage_groups = True
    auth = WerkhubOIDCAuthenticator(config=c)
    assert auth.user_info_to_username({"preferred_username": "alice"}) == "alice"
    for name in [*UNSAFE, "alice\n", "-x"]:
        with pytest.raises(web.HTTPError) as refused:
            auth.user_info_to_username({"preferred_username": name})
        assert refused.value.status_code == 403
        assert "cannot use" in str(refused.value.log_message)
        assert auth.normalize_username(name) == name  # never folded onto another name
        assert not auth.validate_username(auth.normalize_username(name))
    assert auth.validate_username("alice")


async def test_oidc_groups_with_unsafe_names_are_left_out() -> None:
    from traitlets.config import Config

    from werkhub.auth.oidc import WerkhubOIDCAuthenticator

    c = Config()
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = "oauth_user.groups"
    auth = WerkhubOIDCAuthenticator(config=c)
    state = {"oauth_user": {"groups": ["quality", "/quality", "Quality", "qu\u0430lity", "a?b"]}}
    assert await auth.get_user_groups(state) == {"quality"}
