# werkhub's JupyterHub configuration: load werkhub.yaml, apply it, run plugins, then
# the escape hatch (jupyterhub_config.d/*.py next to werkhub.yaml or in the state folder).
# `werkhub up` sets the environment read here; all logic lives in the werkhub package.
import json
import os
import sys
from pathlib import Path

from werkhub.app.configurer import Runtime, apply_config
from werkhub.app.plugins import apply_plugins
from werkhub.config.load import load_config
from werkhub.config.paths import StatePaths

c = get_config()  # noqa: F821 (provided by JupyterHub)

config_file = os.environ.get("WERKHUB_CONFIG") or None
cfg = load_config(config_file)
state = StatePaths.at(os.environ.get("WERKHUB_STATE", ".werkhub"))
runtime = Runtime(
    state=state,
    python=sys.executable,
    cli_token=os.environ.get("WERKHUB_CLI_TOKEN", ""),
    admin_token=os.environ.get("WERKHUB_ADMIN_TOKEN", ""),
    spawner_token=os.environ.get("WERKHUB_SPAWNER_TOKEN", ""),
    admin_name=cfg.auth.native.admin_name,
    config_file=config_file or "",
    sandbox=os.environ.get("WERKHUB_SANDBOX_FOUND", "bwrap") == "bwrap",
    sandbox_note=os.environ.get("WERKHUB_SANDBOX_NOTE", ""),
    as_root=os.geteuid() == 0,
    orgs=tuple(json.loads(state.orgs_file.read_text())) if state.orgs_file.is_file() else (),
)
apply_config(cfg, c, runtime)
apply_plugins(cfg, c)

hatch_dirs = [state.root / "jupyterhub_config.d"]
if config_file:
    hatch_dirs.insert(0, Path(config_file).resolve().parent / "jupyterhub_config.d")
for folder in hatch_dirs:
    for extra in sorted(folder.glob("*.py")):
        load_subconfig(str(extra))  # noqa: F821 (provided by JupyterHub)
