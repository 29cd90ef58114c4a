"""``werkhub up``: validate, lock the state folder, create the first admin, run the hub.

The hub runs as a child process; SIGTERM/SIGINT are forwarded so JupyterHub stops
user servers, managed services and the proxy before we exit.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from werkhub.app.configurer import SOVEREIGN_ENV
from werkhub.app.reap import become_subreaper, collect, end_children, reap
from werkhub.auth.userstore import UserStore, generate_password
from werkhub.config.paths import StatePaths
from werkhub.config.permissions import secure_state
from werkhub.config.schema import WerkhubConfig
from werkhub.errors import Misconfigured

MIN_ADMIN_TOKEN = 32
STOP_GRACE_SECONDS = 30


class LaunchError(Misconfigured, RuntimeError):
    """werkhub cannot start; the message says why and what to do."""


def package_root() -> Path:
    return Path(__file__).resolve().parents[1]


def hub_config_file() -> Path:
    for candidate in (
        package_root().parent / "jupyterhub_config.py",
        package_root() / "_jupyterhub_config.py",
    ):
        if candidate.is_file():
            return candidate
    raise LaunchError("jupyterhub_config.py is missing from this installation")


def find_proxy() -> str:
    """configurable-http-proxy: from PATH or the project's node_modules."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    local = package_root().parent.parent / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    raise LaunchError(
        "configurable-http-proxy was not found: run `make up` (it installs it with npm) "
        "or `npm install configurable-http-proxy@5` and put node_modules/.bin on PATH"
    )


def acquire_lock(state: StatePaths) -> IO[str]:
    handle = open(state.lock, "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise LaunchError(
            f"werkhub is already running on the state folder {state.root} (pid {holder}). "
            "Stop it first (Ctrl-C or `kill -TERM` that pid), or use another --state folder."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def is_locked(state: StatePaths) -> bool:
    if not state.lock.exists():
        return False
    with open(state.lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise LaunchError(
                f"port {port} on {host} ({what}) is in use by another program; stop it or "
                "choose another port in werkhub.yaml"
            ) from None


def write_secret(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


def ensure_first_admin(cfg: WerkhubConfig, state: StatePaths) -> str | None:
    """Create the admin's password on first run; return it (shown once) or None."""
    if cfg.auth.kind != "native":
        return None
    store = UserStore(state.users_db, cfg.auth.native.min_password_length)
    name = cfg.auth.native.admin_name
    if store.get(name) is not None:
        return None
    password = generate_password()
    store.set_password(name, password, approved=True)
    return password


@dataclass
class Launch:
    cfg: WerkhubConfig
    state: StatePaths
    config_file: Path | None
    #: what :meth:`check_sandbox` found (user code isolated, or why not)
    sandbox_ok: bool = False
    sandbox_note: str = ""

    def check_sandbox(self, err: IO[str] = sys.stderr) -> None:
        """Probe the sandbox of the embedded default; ``required`` without one stops
        here, ``auto`` without one starts single-team and says so (never silently)."""
        sp = self.cfg.spawner
        if sp.kind != "local":
            self.sandbox_ok = True
            return
        if sp.sandbox.mode == "off":
            self.sandbox_ok, self.sandbox_note = False, "spawner.sandbox is off"
        else:
            from werkhub.sandbox.host import probe

            found = probe()
            self.sandbox_ok, self.sandbox_note = found.ok, found.reason
            if found.ok:
                return
            if sp.sandbox.mode == "required":
                raise LaunchError(
                    f"spawner.sandbox is required but this machine cannot sandbox user code: "
                    f"{found.reason}. Install bubblewrap (`make up` does as root) or set "
                    "spawner.sandbox: auto for a single-team install"
                )
        how = (
            "User servers and local jobs run under each person's own uid (never root), "
            "but without a sandbox they see each other's processes and every GPU device."
            if os.geteuid() == 0
            else "User servers and local jobs run as werkhub's own OS user and can read "
            "each other's files and werkhub's state."
        )
        print(
            f"werkhub: WARNING: user code is NOT isolated ({self.sandbox_note}). {how} "
            "Starting single-team: self sign-up is off and the UI says so. Install "
            "bubblewrap (apt-get install bubblewrap) to isolate users.",
            file=err,
            flush=True,
        )

    def sweep_cgroups(self, err: IO[str] = sys.stderr) -> None:
        """Sandboxes of a werkhub that crashed left their cgroups: remove the empty ones."""
        if self.cfg.spawner.kind != "local" or os.geteuid() != 0:
            return
        from werkhub.sandbox.host import sweep_cgroups

        removed = sweep_cgroups()
        if removed:
            print(f"werkhub: removed {len(removed)} empty cgroup(s) of ended sandboxes", file=err)

    def environment(self, admin_token: str, cli_token: str, proxy: str) -> dict[str, str]:
        """The hub's environment; tokens made for this run only (never written to disk
        except the CLI's, which ``werkhub users`` reads)."""
        env = dict(os.environ)
        env.update(SOVEREIGN_ENV)
        env["PATH"] = os.pathsep.join(
            [str(Path(proxy).parent), str(Path(sys.executable).parent), env.get("PATH", "")]
        )
        env["WERKHUB_CONFIG"] = str(self.config_file) if self.config_file else ""
        env["WERKHUB_STATE"] = str(self.state.root)
        env["WERKHUB_CLI_TOKEN"] = cli_token
        env["WERKHUB_SPAWNER_TOKEN"] = os.urandom(32).hex()
        env["WERKHUB_ADMIN_TOKEN"] = admin_token
        env["WERKHUB_SANDBOX_FOUND"] = "bwrap" if self.sandbox_ok else "none"
        env["WERKHUB_SANDBOX_NOTE"] = self.sandbox_note
        oidc = self.cfg.auth.oidc
        if oidc and not oidc.client_secret and os.environ.get(oidc.client_secret_env):
            # oauthenticator reads its client secret from OAUTH_CLIENT_SECRET
            env["OAUTH_CLIENT_SECRET"] = os.environ[oidc.client_secret_env]
        return env

    def preflight(self) -> tuple[str, str]:
        admin_token = os.environ.get("WERKHUB_ADMIN_TOKEN", "")
        if admin_token and len(admin_token) < MIN_ADMIN_TOKEN:
            raise LaunchError(
                f"WERKHUB_ADMIN_TOKEN must have at least {MIN_ADMIN_TOKEN} characters "
                f"(it has {len(admin_token)}); generate one with `openssl rand -hex 32`"
            )
        proxy = find_proxy()
        hub = self.cfg.hub
        check_port_free(hub.public_host, hub.public_port, "hub.public_url")
        check_port_free("127.0.0.1", hub.hub_port, "hub.hub_port")
        check_port_free("127.0.0.1", hub.proxy_api_port, "hub.proxy_api_port")
        check_port_free("127.0.0.1", self.cfg.services.werkhub.port, "services.werkhub.port")
        if self.cfg.services.mlflow.enabled:
            check_port_free("127.0.0.1", self.cfg.services.mlflow.port, "services.mlflow.port")
        return admin_token, proxy

    def run(self, out: IO[str] = sys.stdout) -> int:
        self.state.create()
        secure_state(self.state, LaunchError)  # umask 077; files 0600, folders 0700
        lock = acquire_lock(self.state)
        try:
            admin_token, proxy = self.preflight()
            self.check_sandbox()
            self.sweep_cgroups()
            password = ensure_first_admin(self.cfg, self.state)
            cli_token = os.urandom(32).hex()
            write_secret(self.state.cli_token, cli_token)
            env = self.environment(admin_token, cli_token, proxy)
            cmd = [sys.executable, "-m", "jupyterhub", "-f", str(hub_config_file())]
            become_subreaper()  # what the hub leaves when it ends becomes ours to end
            child = subprocess.Popen(
                cmd,
                cwd=self.state.root,
                env=env,
                pass_fds=(lock.fileno(),),
                start_new_session=True,
            )
            announced = self._supervise(child, out, password)
            if password and not announced:
                # never shown: forget it so the next start creates and shows a new one
                UserStore(self.state.users_db).remove(self.cfg.auth.native.admin_name)
            return 0 if child.returncode in (0, -signal.SIGTERM) else child.returncode
        finally:
            self.state.cli_token.unlink(missing_ok=True)
            lock.close()

    def _banner(self, password: str | None, out: IO[str]) -> None:
        base = f"{self.cfg.hub.public_url}{self.cfg.hub.base_url}"
        if password:
            name = self.cfg.auth.native.admin_name
            print(
                f"\n  First run: created the administrator '{name}' with password\n\n"
                f"      {password}\n\n"
                "  It is shown only this once and stored only as a hash.\n",
                file=out,
                flush=True,
            )
        print(f"werkhub is up at {base}", file=out, flush=True)

    def _supervise(
        self, child: subprocess.Popen[bytes], out: IO[str], password: str | None
    ) -> bool:
        """Run until the hub exits or we are told to stop; True if it came up."""
        stopping = False

        def stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        base = f"{self.cfg.hub.public_url}{self.cfg.hub.base_url}"
        health = f"{base}services/werkhub/api/health"
        # the hub starts its services one after the other and routes them last: wait for
        # their ports silently (a bare TCP probe logs nothing), then ask once through the proxy
        ports = [self.cfg.services.werkhub.port]
        if self.cfg.services.mlflow.enabled:
            ports.append(self.cfg.services.mlflow.port)
        announced = False
        while child.poll() is None:
            if (
                not announced
                and not stopping
                and all(_port_open(p) for p in ports)
                and _answers(health)
            ):
                self._banner(password, out)
                announced = True
            time.sleep(0.1 if not announced else 1.0)
            collect(skip=child.pid)  # orphans of the hub's children that ended meanwhile
            if stopping:
                try:
                    child.wait(STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    os.killpg(child.pid, signal.SIGKILL)
                    left = reap(self.state.root)  # its proxy and services: own sessions
                    if left:
                        print(f"werkhub: ended {len(left)} process(es) the hub left", file=out)
                break
        child.wait()
        if not stopping:
            when = "while it ran" if announced else "before it came up"
            print(
                f"werkhub: the hub exited {when} (status {child.returncode})",
                file=out,
                flush=True,
            )
        # a hub that stopped when told ran its own clean-up (cleanup_servers, the proxy):
        # what it left on purpose stays; one that exited on its own, or that a signal ended
        # before it handled signals (it does so only once its services are up), cleaned up
        # nothing, and what it started is ended here
        left = end_children() if not stopping or child.returncode < 0 else []
        if left:
            print(
                f"werkhub: ended {len(left)} process(es) the hub had started", file=out, flush=True
            )
        return announced


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _answers(url: str) -> bool:
    from werkhub.http import answers_ok

    return answers_ok(url, timeout=1)
