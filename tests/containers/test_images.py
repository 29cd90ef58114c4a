"""Every curated image keeps its own and its ancestors' promises (docker-stacks style): the
tests run once per image, and a child is checked against everything its parents promise."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.containers.conftest import CATALOG
from tests.containers.harness import USER_TOKEN, Server, http_get
from werkhub.images.catalog import SOURCE_ROOT
from werkhub.images.engine import Engine

SERVER_CONFIG = (
    SOURCE_ROOT / "hub" / "werkhub" / "app" / "jupyter_config" / "jupyter_server_config.json"
)


def in_image(engine: Engine, tag: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a fresh container of the image (host network, no health timer)."""
    return subprocess.run(
        engine.command("run", "--rm", "--network", "host", "--no-healthcheck", tag, *command),
        env=engine.environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def in_server(engine: Engine, server: Server, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        engine.command("exec", server.container, *command),
        env=engine.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def image_config(engine: Engine, tag: str) -> dict:
    """The image's config; the health check sits in it (docker) or next to it (podman)."""
    inspect = json.loads(engine.run("image", "inspect", tag).stdout)[0]
    config = dict(inspect["Config"])
    config.setdefault("Healthcheck", inspect.get("Healthcheck"))
    return config


def test_runs_as_non_root_user(engine: Engine, tag: str) -> None:
    done = in_image(engine, tag, "sh", "-c", 'id -u; id -un; echo "$HOME"; touch "$HOME/probe"')
    assert done.returncode == 0, done.stderr
    uid, user, home = done.stdout.split()
    assert (uid, user, home) == ("1000", "jovyan", "/home/jovyan")


def test_promised_packages_import(engine: Engine, image: str, tag: str) -> None:
    packages = CATALOG.packages(image)
    script = (
        "import importlib, json, sys\n"
        "failed = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed[name] = repr(exc)\n"
        "print(json.dumps(failed))\n"
    )
    done = in_image(engine, tag, "python", "-c", script, *packages)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {}, f"{image} cannot import them"


def test_promised_commands_on_path(engine: Engine, image: str, tag: str) -> None:
    commands = CATALOG.commands(image)
    done = in_image(
        engine, tag, "sh", "-c", 'for c; do command -v "$c" || exit 1; done', "-", *commands
    )
    assert done.returncode == 0, f"missing one of {commands}: found only {done.stdout.split()}"


def test_environment_is_consistent(engine: Engine, tag: str) -> None:
    done = in_image(engine, tag, "pip", "check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_sovereign_defaults(engine: Engine, tag: str) -> None:
    """No telemetry, no pip version check; JupyterLab's news feed and update check off."""
    env = dict(item.split("=", 1) for item in image_config(engine, tag)["Env"])
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["DO_NOT_TRACK"] == "true"
    assert env["PIP_DISABLE_PIP_VERSION_CHECK"] == "1"
    done = in_image(engine, tag, "cat", "/etc/jupyter/jupyter_server_config.json")
    assert json.loads(done.stdout) == json.loads(SERVER_CONFIG.read_text())
    shown = in_image(engine, tag, "jupyter", "lab", "--show-config")
    assert shown.returncode == 0, shown.stderr
    assert "news_url" in shown.stdout and "NeverCheckForUpdate" in shown.stdout


def test_werkhub_lab_extensions_are_enabled(engine: Engine, tag: str) -> None:
    """Booking-end warnings and the gallery launcher card: the prebuilt JupyterLab extension
    and its server route are installed and switched on, with no node in the image."""
    lab = in_image(engine, tag, "jupyter", "labextension", "list")
    assert lab.returncode == 0, lab.stderr
    listed = lab.stdout + lab.stderr
    assert "werkhub-lab" in listed and "enabled" in listed and "OK" in listed, listed
    server = in_image(engine, tag, "jupyter", "server", "extension", "list")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", server.stdout + server.stderr)  # no colours
    assert re.search(r"werkhub_widgets\.serverext\s+enabled", shown), shown
    assert re.search(r"werkhub_widgets\.serverext\s+OK", shown), shown


def test_health_check_is_declared(engine: Engine, tag: str) -> None:
    check = image_config(engine, tag).get("Healthcheck") or {}
    assert check.get("Test", [])[-1:] == ["/etc/jupyter/healthcheck.py"]


def test_health_check_fails_without_a_server(engine: Engine, tag: str) -> None:
    done = in_image(engine, tag, "python", "/etc/jupyter/healthcheck.py")
    assert done.returncode == 1
    assert "no running Jupyter server" in done.stderr


def test_singleuser_server_answers(server: Server) -> None:
    status, body = http_get(server.url + "api")
    assert status == 200 and "version" in body


def test_server_runs_as_non_root(engine: Engine, server: Server) -> None:
    done = in_server(engine, server, "stat", "-c", "%u", "/proc/1")  # the server is PID 1
    assert done.stdout.strip() == "1000", done.stderr


def test_server_checks_tokens_with_the_hub(server: Server) -> None:
    """API requests need a token that the hub vouches for (here: the stand-in hub)."""
    assert http_get(server.url + "api/contents")[0] == 403
    assert http_get(server.url + "api/contents", token="not-a-valid-token")[0] == 403
    status, listing = http_get(server.url + "api/contents", token=USER_TOKEN)
    assert status == 200 and listing["type"] == "directory"


def test_lab_serves_no_news(server: Server) -> None:
    status, body = http_get(server.url + "lab/api/news", token=USER_TOKEN)
    assert (status, body) == (200, {"news": []})
    status, body = http_get(server.url + "lab/api/update", token=USER_TOKEN)
    assert (status, body) == (200, {"notification": None})


def test_health_check_passes(engine: Engine, server: Server) -> None:
    command = image_config(engine, server.tag)["Healthcheck"]["Test"]
    assert command[0] == "CMD"
    done = in_server(engine, server, *command[1:])
    assert done.returncode == 0, done.stderr
    if engine.name == "podman":
        done = subprocess.run(
            engine.command("healthcheck", "run", server.container),
            env=engine.environ(),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_papermill_runs_a_notebook(engine: Engine, tag: str) -> None:
    script = (
        "import nbformat, papermill\n"
        "nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3',\n"
        "    'display_name': 'Python 3', 'language': 'python'}})\n"
        "nb.cells = [nbformat.v4.new_code_cell('x = 1', metadata={'tags': ['parameters']}),\n"
        "            nbformat.v4.new_code_cell('print(x * 2)')]\n"
        "nbformat.write(nb, '/tmp/in.ipynb')\n"
        "out = papermill.execute_notebook('/tmp/in.ipynb', '/tmp/out.ipynb',\n"
        "    parameters={'x': 21}, kernel_name='python3', progress_bar=False)\n"
        "print(out.cells[-1].outputs[0]['text'].strip())\n"
    )
    done = in_image(engine, tag, "python", "-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "42"


@pytest.mark.parametrize("image", [s.name for s in CATALOG.images if s.name != "base"])
def test_child_keeps_parent_versions(engine: Engine, image: str, built_images) -> None:
    """A child adds packages; it never changes a version its parent installed."""
    spec = CATALOG.get(image)
    parent_tag = built_images.tags[spec.parent]
    freeze = "/opt/werkhub/freeze.txt"
    parent = set(in_image(engine, parent_tag, "cat", freeze).stdout.split())
    child = set(in_image(engine, built_images.tags[image], "cat", freeze).stdout.split())
    assert parent and parent <= child, f"changed by {image}: {sorted(parent - child)}"


def descendants(name: str) -> list[str]:
    """``name`` and every image built on top of it."""
    return [s.name for s in CATALOG.images if name in [a.name for a in CATALOG.lineage(s.name)]]


@pytest.mark.parametrize("image", descendants("pytorch"))
def test_torch_computes_on_cpu(engine: Engine, image: str, built_images) -> None:
    script = (
        "import torch\n"
        "x = torch.arange(6.0).reshape(2, 3)\n"
        "print(torch.__version__, (x @ x.T).tolist(), torch.cuda.is_available())\n"
    )
    done = in_image(engine, built_images.tags[image], "python", "-c", script)
    assert done.returncode == 0, done.stderr
    version, rest = done.stdout.split(" ", 1)
    assert version.startswith("2.13.0")
    assert rest.strip() == "[[5.0, 14.0], [14.0, 50.0]] False"
