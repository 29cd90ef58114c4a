"""Container health check: every running Jupyter server of this user answers its /api.

Finds the servers through their runtime files (jpserver-<pid>.json), as docker-stacks does, so
it works whatever port and base URL the spawner chose; files left by dead processes (a home
volume kept across restarts) are ignored. Exit 0 when healthy, 1 otherwise.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> int:
    servers = []
    for info_file in sorted(Path(jupyter_runtime_dir()).glob("jpserver-*.json")):
        info = json.loads(info_file.read_text())
        if "pid" not in info or alive(int(info["pid"])):
            servers.append(info["url"].rstrip("/") + "/api")
    if not servers:
        print("no running Jupyter server", file=sys.stderr)
        return 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for url in servers:
        try:
            with opener.open(url, timeout=5) as response:
                json.load(response)
        except (OSError, ValueError) as exc:
            print(f"{url}: {exc}", file=sys.stderr)
            return 1
        print(f"{url}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
