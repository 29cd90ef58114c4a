"""Pure rules of organisations (standard library and pydantic only).

Each organisation is mirrored by hub groups: ``org-<slug>`` holds its members (so
JupyterHub scopes filtered by group reach exactly the organisation) and
``org-<slug>-admins`` its admins. Groups created inside an organisation are named
``<slug>-<name>``. A user belongs to at most one organisation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from werkhub.booking.quota import Policy

SLUG_PATTERN = r"^[a-z][a-z0-9]{1,19}$"
GROUP_PATTERN = r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$"
PREFIX = "org-"

Slug = Annotated[
    str,
    Field(
        min_length=2,
        max_length=20,
        pattern=SLUG_PATTERN,
        description="short name: lower-case letters and digits, a letter first, e.g. acme",
    ),
]


def members_group(slug: str) -> str:
    """The hub group of an organisation's members."""
    return f"{PREFIX}{slug}"


def admins_group(slug: str) -> str:
    return f"{PREFIX}{slug}-admins"


def inner_group(slug: str, name: str) -> str:
    """The hub group ``name`` created inside organisation ``slug``."""
    return f"{slug}-{name}"


def reserved(group: str) -> bool:
    """Group names only werkhub creates (an organisation's own groups)."""
    return group.startswith(PREFIX)


class OrgCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: Slug
    name: str = Field(min_length=1, max_length=200, description="display name, e.g. ACME GmbH")


class OrgRename(BaseModel):
    """``PATCH /orgs/{slug}``: a new display name and/or budget (platform admins)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    budget_gpu_hours: float | None = Field(
        default=None, ge=0, le=10_000_000, description="GPU-hours per period; null: none"
    )
    budget_period: Literal["month", "week"] | None = None


class MemberPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    admin: bool = Field(default=False, description="an organisation admin manages its people")


class GroupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=2,
        max_length=32,
        pattern=GROUP_PATTERN,
        description="lower-case letters, digits and dashes; the hub group is <slug>-<name>",
    )


@dataclass(frozen=True)
class Actor:
    """Who asks: a platform admin, an organisation's admin, a member, or someone else."""

    name: str
    platform_admin: bool = False
    org: str | None = None  # the slug of the caller's organisation
    org_admin: bool = False

    def sees(self, slug: str) -> bool:
        return self.platform_admin or self.org == slug

    def manages(self, slug: str) -> bool:
        return self.platform_admin or (self.org == slug and self.org_admin)


def share_refusal(sharer_org: str | None, group: str, group_org: str | None) -> str | None:
    """Why ``group`` may not receive a share from someone of ``sharer_org`` (None: it may).
    Shares stay inside an organisation; people outside every organisation share only with
    groups outside every organisation."""
    if sharer_org == group_org:
        return None
    if sharer_org is None:
        return (
            f"group '{group}' belongs to organisation '{group_org}'; you may share only "
            "with groups outside every organisation"
        )
    return (
        f"group '{group}' is not a group of your organisation '{sharer_org}': "
        "sharing across organisations is not allowed"
    )


def group_slug(group: str, slugs: set[str]) -> str | None:
    """The organisation a hub group belongs to by its name (``org-<slug>``,
    ``org-<slug>-admins`` or ``<slug>-<name>`` of a known slug), or None."""
    if group.startswith(PREFIX):
        rest = group[len(PREFIX) :]
        slug = rest.removesuffix("-admins")
        return slug if slug in slugs else None
    head, sep, _ = group.partition("-")
    if sep and head in slugs:
        return head
    return None


def valid_slug(value: str) -> bool:
    return re.fullmatch(SLUG_PATTERN, value) is not None


def policy_problem(
    policy: Policy,
    budget_gpu_hours: float | None,
    budget_period: str,
    gpus: dict[str, int],
) -> tuple[str, str] | None:
    """Why an organisation may not set ``policy`` for a member or group: (field, message),
    or None. GPU-hours stay within the organisation's budget (a week's quota fits in a
    month or week of it), GPUs within what the site has (``gpus``: type -> count)."""
    unknown = sorted(set(policy.allowed_gpu_types or ()) - set(gpus))
    if unknown:
        return (
            "allowed_gpu_types",
            f"unknown GPU type(s) {', '.join(unknown)}; this site has {', '.join(gpus) or 'none'}",
        )
    types = (
        gpus if policy.allowed_gpu_types is None else {t: gpus[t] for t in policy.allowed_gpu_types}
    )
    site = sum(types.values())
    if policy.max_concurrent_gpus is not None and policy.max_concurrent_gpus > site:
        return (
            "max_concurrent_gpus",
            f"max_concurrent_gpus {policy.max_concurrent_gpus} is more than the {site} GPU(s) "
            "this site has" + ("" if policy.allowed_gpu_types is None else " of the allowed types"),
        )
    hours = policy.gpu_hours_per_week
    if hours is not None and budget_gpu_hours is not None and hours > budget_gpu_hours:
        return (
            "gpu_hours_per_week",
            f"gpu_hours_per_week {hours:g} exceeds the organisation's budget of "
            f"{budget_gpu_hours:g} GPU-hours per {budget_period}",
        )
    return None
