"""Pure rules of organisations' booking policies: what they may set, and which policy
applies to a person (their own, then their groups', then the configured one)."""

from __future__ import annotations

from werkhub.booking.quota import LayeredPolicies, Policy, PolicySet
from werkhub.orgs.rules import policy_problem

GPUS = {"H100": 4, "L40S": 2}


def test_policies_stay_within_the_budget_and_the_site() -> None:
    assert policy_problem(Policy(gpu_hours_per_week=40), 40, "month", GPUS) is None
    field, message = policy_problem(Policy(gpu_hours_per_week=41), 40, "week", GPUS) or ("", "")
    assert field == "gpu_hours_per_week" and "budget of 40 GPU-hours per week" in message
    assert policy_problem(Policy(gpu_hours_per_week=1e6), None, "month", GPUS) is None
    assert policy_problem(Policy(max_concurrent_gpus=6), None, "month", GPUS) is None
    field, message = policy_problem(Policy(max_concurrent_gpus=7), None, "month", GPUS) or ("", "")
    assert field == "max_concurrent_gpus" and "6 GPU(s) this site has" in message
    narrow = Policy(max_concurrent_gpus=3, allowed_gpu_types=["L40S"])
    assert "of the allowed types" in (policy_problem(narrow, None, "month", GPUS) or ("", ""))[1]
    field, message = policy_problem(
        Policy(allowed_gpu_types=["B200", "H100"]), None, "month", GPUS
    ) or ("", "")
    assert field == "allowed_gpu_types" and "B200" in message and "H100, L40S" in message


def test_the_most_specific_policy_wins() -> None:
    configured = PolicySet(
        default=Policy(max_booking_hours=12), groups={"cfg": Policy(max_booking_hours=20)}
    )
    layered = LayeredPolicies(configured)
    assert layered.for_user("al", ["cfg"]).max_booking_hours == 20
    layered.replace(
        {"al": Policy(max_booking_hours=1)},
        {"acme-lab": Policy(max_booking_hours=3), "org-acme": Policy(max_booking_hours=5)},
    )
    assert layered.explain("al", ["acme-lab"]) == (Policy(max_booking_hours=1), "organisation user")
    policy, source = layered.explain("amy", ["acme-lab", "org-acme", "cfg"])
    assert policy.max_booking_hours == 5 and source == "organisation group acme-lab, org-acme"
    assert layered.explain("zed", ["cfg"]) == (Policy(max_booking_hours=20), "configuration")
    assert layered.model_dump() == configured.model_dump()
    layered.replace({}, {})
    assert layered.for_user("al", []).max_booking_hours == 12
