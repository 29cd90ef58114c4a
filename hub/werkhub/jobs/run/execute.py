"""``python -m werkhub.jobs.run.execute REQUEST.json``: run one job run and write
``out_dir/result.json`` (a :class:`~werkhub.jobs.run.notebook.RunOutcome`).

The scheduler starts this in its own process group and kills the group at the run's
deadline; a killed run leaves no result.json (the scheduler records that) but keeps the
output notebook as far as it got (papermill saves it after every cell).

Exit status: 0 when the notebook succeeded, 1 when it failed or timed out (result.json
says which), 2 when the request itself is unusable (the message on stderr says why).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from werkhub.jobs.run.notebook import RunRequest, execute

RESULT = "result.json"


def load_request(path: Path) -> RunRequest:
    return RunRequest.model_validate(json.loads(path.read_text()))


def write_result(out_dir: Path, outcome_json: str) -> Path:
    """Write result.json atomically: a reader never sees half a file."""
    target = out_dir / RESULT
    partial = out_dir / f".{RESULT}.partial"
    partial.write_text(outcome_json)
    os.replace(partial, target)
    return target


def _redact(key: str, value: str) -> str:
    secret = any(word in key.upper() for word in ("TOKEN", "SECRET", "PASSWORD", "KEY"))
    return "(hidden)" if secret else value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    from_env = len(args) == 2 and args[0] == "--request-env"
    if len(args) != 1 and not from_env:
        print(
            "usage: python -m werkhub.jobs.run.execute REQUEST.json\n"
            "       python -m werkhub.jobs.run.execute --request-env VARIABLE",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    source = f"${args[1]}" if from_env else args[0]
    try:
        if from_env:
            req = RunRequest.model_validate(json.loads(os.environ.get(args[1]) or "null"))
        else:
            req = load_request(Path(args[0]))
    except (OSError, ValueError) as exc:
        detail = exc.errors()[0] if isinstance(exc, ValidationError) else exc
        print(f"werkhub job: cannot read the run request {source}: {detail}", file=sys.stderr)
        return 2
    if not Path(req.notebook).is_file():
        print(f"werkhub job: notebook {req.notebook} does not exist", file=sys.stderr)
        return 2
    out_dir = Path(req.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if from_env:
        record = req.model_dump(mode="json")
        record["env"] = {k: _redact(k, v) for k, v in req.env.items()}
        (out_dir / "request.json").write_text(json.dumps(record, indent=2))
        os.environ.pop(args[1], None)  # the kernel need not see it (it holds the token)
    outcome = execute(req)
    write_result(out_dir, outcome.model_dump_json(indent=2))
    error = f": {outcome.error}" if outcome.error else ""
    print(f"werkhub job: run {req.run_id} {outcome.status}{error}", flush=True)
    return 0 if outcome.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
