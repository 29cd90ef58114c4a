"""An organisation's admins hold a hub role filtered to their members' group: after the
hub's next start (JupyterHub takes roles from its configuration) they reach their members
in the hub's own API, and nobody else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hub import running_werkhub

pytestmark = pytest.mark.hub
API = "/services/werkhub/api"


def test_organisation_admins_get_a_group_filtered_hub_role(tmp_path: Path) -> None:
    with running_werkhub(tmp_path, {"services": {"mlflow": {"enabled": False}}}) as hub:
        tokens = {name: hub.create_user(name) for name in ("or-ann", "or-al", "or-zed")}
        with hub.admin() as admin:
            assert (
                admin.post(f"{API}/orgs", json={"slug": "orgacme", "name": "A"}).status_code == 201
            )
            for user, is_admin in (("or-ann", True), ("or-al", False)):
                reply = admin.put(f"{API}/orgs/orgacme/members/{user}", json={"admin": is_admin})
                assert reply.status_code == 200, reply.text
        hub.stop()
        hub.start()
        with hub.client(tokens["or-ann"]) as ann:
            member = ann.get("/hub/api/users/or-al")
            assert member.status_code == 200, member.text
            assert ann.get("/hub/api/users/or-zed").status_code in (403, 404)
            # a member's server is theirs to stop (admin:servers on the group)
            assert ann.delete("/hub/api/users/or-al/server").status_code in (204, 400)
            assert ann.delete("/hub/api/users/or-zed/server").status_code in (403, 404)
        with hub.client(tokens["or-al"]) as al:  # a member holds no such role
            assert al.get("/hub/api/users/or-ann").status_code in (403, 404)
