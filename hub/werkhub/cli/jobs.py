"""``werkhub jobs list|run|pause|resume|logs``: the command line of scheduled jobs.

It talks to the running werkhub service with a user's hub token (``--token`` or
``WERKHUB_TOKEN``: that user's jobs) or, by default, the token ``werkhub up`` left for
the command line (administrator view: everyone's jobs).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from werkhub.cli.common import CliError, load
from werkhub.config.paths import StatePaths
from werkhub.http import JsonApi


class JobsCliError(CliError):
    pass


class ServiceClient:
    def __init__(self, args: argparse.Namespace) -> None:
        cfg, _ = load(args)
        state = StatePaths.at(args.state)
        token = args.token or os.environ.get("WERKHUB_TOKEN", "")
        if not token:
            if not state.cli_token.exists():
                raise CliError(f"werkhub is not running on {state.root} (no command-line token)")
            token = state.cli_token.read_text().strip()
        self.api = JsonApi(
            f"{cfg.hub.public_url}{cfg.hub.base_url}services/werkhub/api",
            token,
            error=JobsCliError,
            unreachable=JobsCliError,
        )

    def request(self, method: str, path: str, raw: bool = False) -> Any:
        return self.api.request(method, path, raw=raw)


def _cmd_list(args: argparse.Namespace) -> int:
    client = ServiceClient(args)
    for job in client.request("GET", "/jobs?all=true"):
        schedule = job["schedule"]
        when = schedule.get("cron") or schedule.get("at") or schedule["kind"]
        state = "paused" if job["paused"] else (job["next_runs"] or ["-"])[0]
        print(f"{job['id']}\t{job['owner']}\t{job['name']}\t{when}\t{state}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    run = ServiceClient(args).request("POST", f"/jobs/{args.job_id}/run")
    print(f"queued run {run['id']} of job {args.job_id}")
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    ServiceClient(args).request("POST", f"/jobs/{args.job_id}/{args.jobs_command}")
    print(f"job {args.job_id}: {'paused' if args.jobs_command == 'pause' else 'resumed'}")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    client = ServiceClient(args)
    run_id = args.run_id
    if args.job:
        runs = client.request("GET", f"/jobs/{args.run_id}/runs?limit=1")
        if not runs:
            raise client.error(f"job {args.run_id} has no runs yet")
        run_id = runs[0]["id"]
    run = client.request("GET", f"/runs/{run_id}")
    print(f"# run {run_id} of job {run['job_id']} ({run['job_name']}): {run['status']}")
    if run.get("error"):
        print(f"# error: {run['error']}")
    print(client.request("GET", f"/runs/{run_id}/log", raw=True), end="")
    return 0


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    """Register ``werkhub jobs ...``; ``common`` adds --state and --config."""
    jobs = subparsers.add_parser("jobs", help="scheduled notebook jobs of the running werkhub")
    sub = jobs.add_subparsers(dest="jobs_command", required=True)

    def options(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument("--token", help="a user's hub token (default: $WERKHUB_TOKEN or admin)")

    lst = sub.add_parser("list", help="jobs: id, owner, name, schedule, next run")
    options(lst)
    lst.set_defaults(func=_cmd_list)
    run = sub.add_parser("run", help="queue a run of a job now")
    options(run)
    run.add_argument("job_id", type=int)
    run.set_defaults(func=_cmd_run)
    for name, text in (("pause", "pause a job's schedule"), ("resume", "resume it from now")):
        p = sub.add_parser(name, help=text)
        options(p)
        p.add_argument("job_id", type=int)
        p.set_defaults(func=_cmd_pause)
    logs = sub.add_parser("logs", help="status and log of a run")
    options(logs)
    logs.add_argument("run_id", type=int, help="run id (with --job: a job id, its newest run)")
    logs.add_argument("--job", action="store_true", help="RUN_ID is a job id: its newest run")
    logs.set_defaults(func=_cmd_logs)
