"""Response models of the federations API (werkhub.service.federations)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PartyOut(BaseModel):
    org: str
    state: str = Field(description="invited | accepted | declined | left | revoked")
    user: str | None = Field(
        default=None, description="the party user (shown to that organisation only)"
    )
    data_folder: str | None = Field(
        default=None, description="relative to the party user's home (that organisation only)"
    )
    gpus: int = 0
    node: str | None = Field(
        default=None, description="the party's SuperNode: connected | stopped | unknown"
    )
    traffic: dict[str, int] | None = Field(
        default=None, description="bytes sent and received through the party's relay"
    )


class FederationOut(BaseModel):
    id: int
    name: str
    owner: str
    owner_org: str
    app: dict[str, str]
    strategy: str
    rounds: int
    min_parties: int
    secure_aggregation: bool = Field(description="SecAgg+ for a run with the accepted parties")
    secure_aggregation_setting: bool | None = Field(
        default=None, description="as set: null means on for 3 or more parties"
    )
    run_config: dict[str, Any] = Field(default_factory=dict, description="(owner only)")
    state: str
    parties: list[PartyOut]
    created: str


class RoundOut(BaseModel):
    round: int
    parties: int
    loss: float | None
    metrics: dict[str, float]


class RunOut(BaseModel):
    id: int
    federation_id: int
    flower_run_id: int | None
    status: str = Field(description="starting | running | finished | failed | stopped")
    message: str
    started_by: str = Field(
        description="who started it: from the page, the widget or the API, or with their own "
        "`flwr run` (the message then says so)"
    )
    planned_rounds: int
    secure_aggregation: bool
    parties: list[str]
    rounds: list[RoundOut]
    started: str
    ended: str | None
    mlflow: dict[str, str | None] | None = Field(
        default=None, description="the owner's MLflow experiment and run"
    )
    party_mlflow: dict[str, str | None] | None = Field(
        default=None, description="your organisation's party run in its user's experiment"
    )
    model: dict[str, str] | None = None


class FlwrConfig(BaseModel):
    connection: str = Field(description="the connection's name in config.toml")
    address: str
    flwr_home: str = Field(description="the folder config.toml names for ca.pem (FLWR_HOME)")
    config_toml: str = Field(description="put it in $FLWR_HOME/config.toml")
    ca_certificate: str = Field(description="the federation's CA certificate (PEM)")
