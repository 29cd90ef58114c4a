"""Schema of ``werkhub.yaml``: pure pydantic models, no I/O.

Every section forbids unknown keys so a typo is reported instead of silently ignored.
Defaults describe the embedded default: SQLite, local process spawner, MLflow with SQLite.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from werkhub.auth.names import name_problem
from werkhub.booking.idle import IdlePolicy
from werkhub.booking.quota import PolicySet

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubSection(Section):
    """Where the hub listens. Everything binds to loopback unless told otherwise."""

    public_url: str = "http://127.0.0.1:8000"
    hub_port: Port = 8081
    proxy_api_port: Port = 8001
    base_url: str = "/"
    concurrent_spawn_limit: int = Field(default=20, ge=1, le=1000)
    shutdown_on_logout: bool = False

    @field_validator("public_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(
                "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000"
            )
        if parsed.path not in ("", "/"):
            raise ValueError("must not contain a path; use hub.base_url for a prefix")
        return value.rstrip("/")

    @field_validator("base_url")
    @classmethod
    def _check_base(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/', e.g. '/' or '/werkhub/'")
        return value if value.endswith("/") else value + "/"

    @property
    def public_host(self) -> str:
        return urlparse(self.public_url).hostname or "127.0.0.1"

    @property
    def public_port(self) -> int:
        parsed = urlparse(self.public_url)
        return parsed.port or (443 if parsed.scheme == "https" else 80)


class DatabaseSection(Section):
    """``url`` empty means SQLite files in the state folder."""

    url: str = ""

    @field_validator("url")
    @classmethod
    def _check_db(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql", "mysql")):
            raise ValueError("must be empty (embedded SQLite) or a sqlite:/postgresql:/mysql: URL")
        return value


class NativeAuthSection(Section):
    allow_signup: bool = True
    min_password_length: int = Field(default=10, ge=8, le=256)
    admin_name: str = "admin"

    @field_validator("admin_name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        problem = name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class OidcSection(Section):
    """OpenID Connect login (Keycloak or any standard provider)."""

    provider: Literal["keycloak", "generic"] = "keycloak"
    display_name: str = "Keycloak"
    issuer: str = ""
    authorize_url: str = ""
    token_url: str = ""
    userinfo_url: str = ""
    client_id: str = ""
    client_secret: str = ""
    client_secret_env: str = "WERKHUB_OIDC_CLIENT_SECRET"
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    admin_groups: list[str] = Field(default_factory=list)
    allowed_groups: list[str] = Field(default_factory=list)
    allow_all: bool = False

    @model_validator(mode="after")
    def _endpoints(self) -> OidcSection:
        if self.provider == "keycloak" and not self.issuer:
            raise ValueError("issuer is required for provider 'keycloak' (…/realms/NAME)")
        if self.provider == "generic":
            missing = [
                k for k in ("authorize_url", "token_url", "userinfo_url") if not getattr(self, k)
            ]
            if missing:
                raise ValueError(f"provider 'generic' needs {', '.join(missing)}")
        if not self.allow_all and not self.allowed_groups and not self.admin_groups:
            raise ValueError("set allowed_groups or admin_groups, or allow_all: true")
        return self

    def endpoint(self, which: Literal["authorize", "token", "userinfo"]) -> str:
        explicit = getattr(self, f"{which}_url")
        if explicit:
            return explicit
        suffix = {"authorize": "auth", "token": "token", "userinfo": "userinfo"}[which]
        return f"{self.issuer.rstrip('/')}/protocol/openid-connect/{suffix}"


class AuthSection(Section):
    kind: Literal["native", "oidc"] = "native"
    native: NativeAuthSection = Field(default_factory=NativeAuthSection)
    oidc: OidcSection | None = None

    @model_validator(mode="after")
    def _oidc_present(self) -> AuthSection:
        if self.kind == "oidc" and self.oidc is None:
            raise ValueError("kind 'oidc' needs an 'oidc' section (issuer, client_id, ...)")
        if self.kind == "oidc" and self.oidc is not None and not self.oidc.client_id:
            raise ValueError("oidc.client_id is required")
        return self


class ImageEntry(Section):
    """A curated image users may choose (Docker and Kubernetes backends)."""

    image: str = Field(min_length=1, max_length=256)
    description: str = ""
    mem_limit: str = ""
    cpu_limit: float | None = Field(default=None, gt=0, le=512)


class DockerSection(Section):
    url: str = "unix:///var/run/docker.sock"
    network: str = "bridge"
    #: host network bound to 127.0.0.1 (tests, or a single machine without a bridge)
    loopback_host_network: bool = False
    shared_volumes: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("unix://", "tcp://", "ssh://")):
            raise ValueError("must be a unix://, tcp:// or ssh:// Docker API address")
        return value


class SandboxSection(Section):
    """Isolation of user code in the embedded default (``spawner.kind: local``).

    ``auto`` sandboxes every user server and local job with bubblewrap where the machine
    can, and otherwise starts single-team (self sign-up off, a banner in the UI);
    ``required`` refuses to start without a sandbox; ``off`` runs user code unsandboxed
    (one trusted team). Unsandboxed user code never runs as root: a root-run werkhub starts
    it under each person's own uid with the same limits; run as an ordinary user, it runs
    as that user. ``spawner.sandbox: required`` is short for
    ``spawner.sandbox: {mode: required}``.
    """

    mode: Literal["auto", "required", "off"] = "auto"
    #: when werkhub runs as root, each user gets its own uid from this range
    uid_base: int = Field(default=200_000, ge=1000, le=2**31 - 2**20)
    uid_count: int = Field(default=65_536, ge=1, le=2**20)
    #: where the NVIDIA device files are (a test points it at stand-in files)
    device_dir: str = "/dev"
    #: processes (and threads) one sandbox may have
    max_processes: int = Field(default=2048, ge=16, le=4_194_304)
    #: further host folders every sandbox sees read-only (shared data sets)
    read_only: list[str] = Field(default_factory=list)

    @field_validator("device_dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value

    @field_validator("read_only")
    @classmethod
    def _absolute_all(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or path.rstrip("/") == "":
                raise ValueError(f"must be absolute folders other than / (got {path!r})")
        return value


class SpawnerSection(Section):
    #: slurm: servers as Slurm jobs (docs/slurm.md), needs slurm.enabled
    kind: Literal["local", "docker", "kubernetes", "slurm"] = "local"
    default_url: str = "/lab"
    start_timeout: int = Field(default=120, ge=10, le=3600)
    http_timeout: int = Field(default=60, ge=5, le=3600)
    mem_limit: str = ""
    cpu_limit: float | None = Field(default=None, gt=0, le=512)
    environment: dict[str, str] = Field(default_factory=dict)
    images: dict[str, ImageEntry] = Field(default_factory=dict)
    default_image: str = ""
    docker: DockerSection = Field(default_factory=DockerSection)
    sandbox: SandboxSection = Field(default_factory=SandboxSection)

    @field_validator("sandbox", mode="before")
    @classmethod
    def _sandbox_shorthand(cls, value: object) -> object:
        if value is False:  # YAML reads a bare `off` as false
            return {"mode": "off"}
        return {"mode": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _default_image_known(self) -> SpawnerSection:
        if self.default_image and self.default_image not in self.images:
            raise ValueError(f"default_image '{self.default_image}' is not one of images")
        if self.kind in ("docker", "kubernetes") and not self.images:
            raise ValueError(f"spawner kind '{self.kind}' needs at least one entry in images")
        return self

    @field_validator("mem_limit")
    @classmethod
    def _check_mem(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d+(\.\d+)?[KMGT]?", value):
            raise ValueError("must be a size like '512M', '4G' or empty for no limit")
        return value


class MigSlices(Section):
    """MIG slices of one GPU: each slice of a profile is a bookable unit of its own type."""

    profile: str
    count: int = Field(ge=1, le=7)

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, value: str) -> str:
        if not re.fullmatch(r"\d+g\.\d+gb(\+me)?", value):
            raise ValueError("must be a MIG profile like '1g.10gb' or '3g.40gb'")
        return value


class GpuDevice(Section):
    index: int = Field(ge=0, le=63)
    uuid: str = ""
    model: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    memory_gb: float = Field(gt=0, le=4096)
    mig: list[MigSlices] = Field(default_factory=list)


class GpuNode(Section):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
    devices: list[GpuDevice] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_indexes(self) -> GpuNode:
        seen = [d.index for d in self.devices]
        if len(seen) != len(set(seen)):
            raise ValueError(f"device indexes on node {self.name} must be unique")
        return self


class GpusSection(Section):
    """GPU inventory. Without nodes, werkhub books a small simulated demo inventory."""

    simulated: bool = False
    nodes: list[GpuNode] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_nodes(self) -> GpusSection:
        names = [n.name for n in self.nodes]
        if len(names) != len(set(names)):
            raise ValueError("node names must be unique")
        return self


#: an operating-system user name (what shadow's useradd accepts, 32 characters at most)
OS_USER_PATTERN = r"^[a-z_][a-z0-9_.-]{0,31}$"


class SlurmUserMapping(Section):
    """How hub users become the OS users Slurm runs their jobs as: ``same`` (the hub
    name), ``prefix`` (``prefix`` + the hub name) or ``map`` (only the users listed);
    entries of ``map`` win in every mode."""

    mode: Literal["same", "prefix", "map"] = "same"
    prefix: str = Field(default="wh-", pattern=r"^[a-z_][a-z0-9_.-]{0,15}$")
    map: dict[str, str] = Field(default_factory=dict)

    @field_validator("map")
    @classmethod
    def _os_names(cls, value: dict[str, str]) -> dict[str, str]:
        for hub_user, os_user in value.items():
            if not re.fullmatch(OS_USER_PATTERN, os_user):
                raise ValueError(f"'{os_user}' (for {hub_user}) is not an OS user name")
        return value


class SlurmGpuType(Section):
    """How a Slurm GPU type (the ``a100`` of ``Gres=gpu:a100:2``) shows in werkhub."""

    model: str = Field(default="", max_length=64, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    memory_gb: float = Field(default=1, gt=0, le=4096)


class SlurmSection(Section):
    """A Slurm cluster as GPU backend: its nodes' GPUs are the inventory, bookings of
    whole nodes become Slurm reservations (docs/slurm.md)."""

    enabled: bool = False
    conf: str = ""
    partition: str = ""
    user_mapping: SlurmUserMapping = Field(default_factory=SlurmUserMapping)
    create_users: bool = False
    reconcile_seconds: float = Field(default=60, ge=5, le=3600)
    command_timeout_seconds: float = Field(default=10, ge=1, le=300)
    retry_seconds: float = Field(default=30, ge=0, le=600)
    gpu_types: dict[str, SlurmGpuType] = Field(default_factory=dict)
    #: the partition of werkhub's hold jobs, which keep booked GPUs of part of a node
    #: (RootOnly, above ordinary work's PriorityTier, preempt/partition_prio: docs/slurm.md)
    hold_partition: str = Field(default="werkhub-hold", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: spawner.kind slurm and jobs: the partition of work outside a GPU booking (CPU only)
    cpu_partition: str = Field(default="cpu", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: the time limit of a CPU-only server, in minutes (a booked one ends with its booking)
    server_minutes: int = Field(default=480, ge=5, le=30 * 24 * 60)
    #: how often the hub asks Slurm whether each server's job still runs, in seconds
    poll_seconds: int = Field(default=30, ge=5, le=3600)
    #: Python on the nodes with werkhub's packages (jupyterhub, papermill), readable by
    #: every OS user; empty: the interpreter werkhub runs with
    python: str = Field(default="", pattern=r"^(/\S+)?$")

    @field_validator("conf")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path to slurm.conf, or empty")
        return value

    @field_validator("partition")
    @classmethod
    def _partition_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ValueError("must be a Slurm partition name (letters, digits, _ . -)")
        return value


class BookingSection(Section):
    no_show_minutes: int = Field(default=15, ge=1, le=1440)
    tick_seconds: float = Field(default=30, ge=0.5, le=600)
    #: minutes before a booking ends that its user is warned
    warn_minutes: int = Field(default=15, ge=1, le=240)
    #: at the end: stop the server, or restart it without GPUs (same image and files)
    end_action: Literal["stop", "downgrade"] = "stop"
    #: GPUs of an active booking that stay below a utilization threshold (NVML, on the
    #: machine that runs the werkhub service) are reported to the user or released
    idle: IdlePolicy = Field(default_factory=IdlePolicy)
    waitlist_notice: bool = True
    policies: PolicySet = Field(default_factory=PolicySet)


class WerkhubServiceSection(Section):
    port: Port = 10101
    time_zone: str = "Europe/Berlin"
    #: folder of starter templates for the gallery; empty: the project's templates/
    templates_dir: str = ""
    #: the benchmark's floor endpoint (POST api/probe: one insert, nothing else); off
    #: answers 404. Only ``bench/booking.py`` turns it on, for the hub it starts itself
    probe: bool = False


class MlflowSection(Section):
    enabled: bool = True
    port: Port = 10102
    workers: int = Field(default=1, ge=1, le=16)
    backend_store_uri: str = ""
    artifacts_destination: str = ""
    #: private 127.0.0.1 port of the MLflow server behind the gateway; 0: any free port
    internal_port: int = Field(default=0, ge=0, le=65535)
    #: S3-compatible artifact store (artifacts_destination s3://bucket/path): endpoint of
    #: e.g. MinIO or Ceph (empty: AWS), AWS shared-credentials file and its profile
    s3_endpoint_url: str = ""
    s3_credentials_file: str = ""
    s3_profile: str = ""

    @field_validator("artifacts_destination")
    @classmethod
    def _check_artifacts(cls, value: str) -> str:
        if value and not (value.startswith(("/", "file:///", "s3://")) and len(value) > 5):
            raise ValueError(
                "must be empty (state folder), an absolute path, file:///PATH or s3://BUCKET/PATH"
            )
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if value and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL, e.g. https://minio.local:9000")
        return value

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> MlflowSection:
        s3_keys = ("s3_endpoint_url", "s3_credentials_file", "s3_profile")
        used = [k for k in s3_keys if getattr(self, k)]
        if used and not self.artifacts_destination.startswith("s3://"):
            raise ValueError(f"{', '.join(used)} need artifacts_destination s3://BUCKET/PATH")
        return self


class ServicesSection(Section):
    werkhub: WerkhubServiceSection = Field(default_factory=WerkhubServiceSection)
    mlflow: MlflowSection = Field(default_factory=MlflowSection)
    #: seconds the hub waits for each of its services to answer when it starts; a
    #: service still silent then stops the hub (JupyterHub's own default is 30 s, which a
    #: busy machine starting the MLflow server can overrun)
    start_timeout: int = Field(default=180, ge=5, le=3600)


class SmtpSection(Section):
    """E-mail of job notices; empty ``host`` means no e-mail (notices stay in the hub)."""

    host: str = ""
    port: Port = 587
    sender: str = "werkhub@localhost"
    starttls: bool = True
    user: str = ""
    password_file: str = ""
    #: address of a user: an explicit entry, else the template ("{user}@example.com")
    address_template: str = ""
    recipients: dict[str, str] = Field(default_factory=dict)


class JobsSection(Section):
    """Scheduled notebook jobs (papermill reports) run by the werkhub service."""

    enabled: bool = True
    max_concurrent: int = Field(default=2, ge=1, le=256)
    #: runs of one owner running at a time; free slots go to the owners in turn
    max_per_user: int = Field(default=1, ge=1, le=256)
    #: runs one owner may have waiting; beyond it "run now" answers 429, cron fires skip
    max_queued_per_user: int = Field(default=20, ge=1, le=10000)
    tick_seconds: float = Field(default=10, ge=0.2, le=600)
    #: fires missed while werkhub was down: once (one late run), all, or skip
    catch_up: Literal["once", "all", "skip"] = "once"
    #: a fire started within this many seconds of its time counts as on time
    on_time_seconds: int = Field(default=120, ge=1, le=86400)
    #: where runs keep their output notebook, report and log; empty: STATE/jobs
    reports_dir: str = ""
    kernel_name: str = "python3"
    smtp: SmtpSection = Field(default_factory=SmtpSection)


class ServingSection(Section):
    """Model serving endpoints (``/endpoints/<owner>/<name>/``)."""

    enabled: bool = True
    #: where scoring servers run: auto follows ``spawner.kind`` (local sandbox, docker)
    backend: Literal["auto", "local", "docker"] = "auto"
    #: curated image of scoring servers on Docker (a name of ``spawner.images``)
    image: str = "base"
    max_endpoints_per_user: int = Field(default=10, ge=0, le=1000)
    #: how long a request to a scaled-to-zero endpoint waits for it to start
    cold_start_timeout_seconds: float = Field(default=120, ge=1, le=3600)
    #: how long a new server may take to answer /ping before it counts as failed
    ready_timeout_seconds: float = Field(default=180, ge=5, le=3600)
    #: the scoring server's own limit on one request
    request_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    #: largest request body passed to a model
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    #: how often endpoints are checked (crashes, idle, moved aliases, figures)
    check_seconds: float = Field(default=5, ge=0.2, le=300)
    #: how often an endpoint that follows an alias asks MLflow where it points
    alias_poll_seconds: float = Field(default=15, ge=1, le=3600)
    #: GPU endpoints book this long and extend before the end while they run
    gpu_booking_minutes: int = Field(default=60, ge=15, le=1440)
    #: characters kept of each logged request and answer (request logging on)
    log_chars: int = Field(default=4096, ge=64, le=1024 * 1024)


class OrgsSection(Section):
    """Organisations' monthly statements."""

    #: price of one GPU-hour per GPU type (booked hours are billed); empty: no amounts
    prices_per_gpu_hour: dict[str, float] = Field(default_factory=dict)
    currency: str = Field(default="EUR", min_length=3, max_length=3)

    @field_validator("prices_per_gpu_hour")
    @classmethod
    def _check_prices(cls, value: dict[str, float]) -> dict[str, float]:
        for gpu_type, price in value.items():
            if price < 0:
                raise ValueError(f"{gpu_type}: a price is not negative")
        return value


class FederationSection(Section):
    """Federated learning with Flower: each federation's SuperLink and its parties'
    SuperNodes run as sandboxed local processes (``docs/federated-learning.md``)."""

    #: folder of Flower's executables (its own virtual environment); empty: the
    #: ``.venv-flower/bin`` that ``make bootstrap`` builds next to werkhub's sources
    flower_bin: str = ""
    #: how long a SuperLink may take to listen before its start counts as failed
    link_start_timeout: float = Field(default=60, ge=5, le=600)
    #: a SuperNode that cannot reach its SuperLink gives up after this long
    node_max_wait_seconds: int = Field(default=600, ge=10, le=86400)
    #: limits of each SuperLink's sandbox (the ServerApp runs in it)
    link_mem_limit: str = "4G"
    link_cpu_limit: float | None = Field(default=2.0, gt=0)
    #: limits of each party's SuperNode sandbox (the ClientApp runs in it)
    node_mem_limit: str = "8G"
    node_cpu_limit: float | None = Field(default=4.0, gt=0)
    max_processes: int = Field(default=512, ge=16, le=100000)

    @field_validator("link_mem_limit", "node_mem_limit")
    @classmethod
    def _check_mem(cls, value: str) -> str:
        if value and not re.fullmatch(r"\d+(\.\d+)?[KMGT]?", value):
            raise ValueError("must be a size like '512M', '4G' or empty for no limit")
        return value


class WerkhubConfig(Section):
    """Root of ``werkhub.yaml``."""

    hub: HubSection = Field(default_factory=HubSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    spawner: SpawnerSection = Field(default_factory=SpawnerSection)
    services: ServicesSection = Field(default_factory=ServicesSection)
    gpus: GpusSection = Field(default_factory=GpusSection)
    slurm: SlurmSection = Field(default_factory=SlurmSection)
    booking: BookingSection = Field(default_factory=BookingSection)
    jobs: JobsSection = Field(default_factory=JobsSection)
    serving: ServingSection = Field(default_factory=ServingSection)
    orgs: OrgsSection = Field(default_factory=OrgsSection)
    federation: FederationSection = Field(default_factory=FederationSection)
    plugins: list[str] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("plugins")
    @classmethod
    def _check_plugins(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?", item):
                raise ValueError(f"'{item}' is not 'package.module' or 'package.module:function'")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> WerkhubConfig:
        ports = {
            "hub.public_url": self.hub.public_port,
            "hub.hub_port": self.hub.hub_port,
            "hub.proxy_api_port": self.hub.proxy_api_port,
            "services.werkhub.port": self.services.werkhub.port,
        }
        if self.services.mlflow.enabled:
            ports["services.mlflow.port"] = self.services.mlflow.port
            if self.services.mlflow.internal_port:
                ports["services.mlflow.internal_port"] = self.services.mlflow.internal_port
        seen: dict[int, str] = {}
        for key, port in ports.items():
            if port in seen:
                raise ValueError(f"{key} uses port {port}, already taken by {seen[port]}")
            seen[port] = key
        return self

    @model_validator(mode="after")
    def _slurm_spawner_needs_slurm(self) -> WerkhubConfig:
        if self.spawner.kind == "slurm" and not self.slurm.enabled:
            raise ValueError("spawner.kind 'slurm' needs slurm.enabled: true (and slurm.conf)")
        return self
