"""The image catalog and build logic without an engine: validation with clear errors, build
order, the engine command lines, engine detection and the CLI. No container is started."""

from __future__ import annotations

import argparse
import stat
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from werkhub.cli.images import add_cli
from werkhub.images import catalog as images
from werkhub.images.catalog import ImageError, build_image, build_images, load_catalog
from werkhub.images.engine import ContainerError, Engine, detect_engine, podman_env

SHIPPED = images.SOURCE_ROOT / "images"
DOCKERFILE = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"


def write_catalog(folder: Path, entries: list[dict], files: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        if files and isinstance(entry, dict) and isinstance(entry.get("name"), str):
            image = folder / entry["name"]
            image.mkdir(exist_ok=True)
            (image / "Dockerfile").write_text(DOCKERFILE)
            (image / "README.md").write_text("# image\n")
            (image / "requirements.txt").write_text("")
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"images": entries}))
    return path


def entry(name: str, parent: str | None = None, **extra: object) -> dict:
    data: dict = {"name": name, "description": f"{name} image", **extra}
    if parent:
        data["parent"] = parent
    elif "base_image" not in extra:
        data["base_image"] = "python:3.11-slim"
    return data


def catalog_error(tmp_path: Path, entries: list[dict], files: bool = True) -> str:
    with pytest.raises(ImageError) as caught:
        load_catalog(write_catalog(tmp_path, entries, files))
    return str(caught.value)


def test_shipped_catalog_loads_parents_first() -> None:
    catalog = load_catalog(SHIPPED / "catalog.yaml")
    order = [spec.name for spec in catalog.build_order()]
    assert order[0] == "base" and "pytorch" in order
    for spec in catalog.images:
        if spec.parent:
            assert order.index(spec.parent) < order.index(spec.name)
    assert [s.name for s in catalog.build_order(["pytorch"])] == ["base", "pytorch"]
    assert set(catalog.packages("base")) < set(catalog.packages("pytorch"))
    assert "werkhub_widgets" in catalog.packages("pytorch") and "torch" in catalog.packages(
        "pytorch"
    )
    assert catalog.get("pytorch").gpu and not catalog.get("base").gpu


def test_shipped_requirements_are_pinned() -> None:
    for folder in SHIPPED.iterdir():
        requirements = folder / "requirements.txt"
        if requirements.is_file():
            lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
            for line in filter(None, lines):
                assert "==" in line, f"{requirements}: '{line}' is not pinned"


def test_deep_lineage_and_order(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, [entry("gamma", "beta"), entry("alpha"), entry("beta", "alpha")])
    catalog = load_catalog(path)
    assert [s.name for s in catalog.build_order()] == ["alpha", "beta", "gamma"]
    assert [s.name for s in catalog.lineage("gamma")] == ["alpha", "beta", "gamma"]
    assert [s.name for s in catalog.build_order(["beta", "gamma"])] == ["alpha", "beta", "gamma"]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([entry("base"), entry("child", "missing")], "parent 'missing' is not in the catalog"),
        ([entry("aa", "bb"), entry("bb", "aa")], "parent cycle: aa -> bb -> aa"),
        ([entry("base"), entry("base")], "image names must be unique: base"),
        ([{"name": "root", "description": "x"}], "images[0] (root): Value error, a root image"),
        ([entry("base"), entry("kid", "base", base_image="x")], "images[1] (kid): Value error"),
        ([entry("base", colour="red")], "images[0] (base).colour: Extra inputs are not permitted"),
        (
            [entry("Bad_Name")],
            "images[0] (Bad_Name).name: Value error, 'Bad_Name': use 2-40 lowercase",
        ),
        ([entry("base", packages=["not a module"])], "images[0] (base).packages[0]"),
        ([entry("base", extra_index_url={"cuda": "https://x"})], "extra_index_url.cuda needs gpu"),
        ([entry("base", extra_index_url={"rocm": "https://x"})], "extra_index_url.rocm"),
    ],
)
def test_invalid_catalogs_name_the_problem(
    tmp_path: Path, entries: list[dict], expected: str
) -> None:
    message = catalog_error(tmp_path, entries)
    assert expected in message, message
    assert str(tmp_path / "catalog.yaml") in message


def test_image_folders_are_checked(tmp_path: Path) -> None:
    message = catalog_error(tmp_path, [entry("base")], files=False)
    assert "image 'base'" in message and "Dockerfile is missing" in message
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "Dockerfile").write_text("FROM debian\n")
    (tmp_path / "base" / "README.md").write_text("")
    (tmp_path / "base" / "requirements.txt").write_text("")
    assert "must take ARG BASE_IMAGE" in catalog_error(tmp_path, [entry("base")], files=False)


def test_unknown_image_lists_the_known_ones() -> None:
    catalog = load_catalog(SHIPPED / "catalog.yaml")
    with pytest.raises(ImageError, match=r"no image 'cuda' in the catalog \(images: base, pytorch"):
        catalog.build_order(["cuda"])


def test_not_yaml_and_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text("images: [\n")
    with pytest.raises(ImageError, match="not valid YAML"):
        load_catalog(tmp_path / "catalog.yaml")
    with pytest.raises(ImageError, match="cannot read the image catalog"):
        load_catalog(tmp_path / "absent.yaml")


# --- command lines, with a recording stand-in for the engine ---------------------------------


def recording_engine(tmp_path: Path, name: str = "podman") -> tuple[Engine, Path]:
    log = tmp_path / "calls.log"
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\necho ---- >> {log}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return Engine(name, str(script)), log  # type: ignore[arg-type]


def calls(log: Path) -> list[list[str]]:
    return [c.strip("\n").split("\n") for c in log.read_text().split("----\n") if c.strip()]


def project_dir(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "werkhub-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    return project


def test_offline_build_has_no_index_and_no_network(tmp_path: Path) -> None:
    engine, log = recording_engine(tmp_path)
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    catalog = load_catalog(SHIPPED / "catalog.yaml")
    tag = build_image(
        "pytorch",
        engine,
        "werkhub/base:latest",
        wheelhouse,
        catalog=catalog,
        project=project_dir(tmp_path),
        labels={"extra": "yes"},
    )
    assert tag == "werkhub/pytorch:latest"
    (args,) = calls(log)
    assert args[:3] == ["build", "--tag", "werkhub/pytorch:latest"]
    pairs = set(pairwise(args))
    assert ("--format", "docker") in pairs  # podman's OCI format would drop HEALTHCHECK
    assert ("--build-arg", "BASE_IMAGE=werkhub/base:latest") in pairs
    assert ("--build-arg", "PIP_NO_INDEX=1") in pairs and ("--network", "none") in pairs
    assert ("--build-context", f"wheels={wheelhouse}") in pairs
    assert ("--label", "io.werkhub.gpu=true") in pairs and ("--label", "extra=yes") in pairs
    assert not any(a.startswith("PIP_EXTRA_INDEX_URL") for a in args)
    assert args[-1] == str(SHIPPED / "pytorch")


def test_online_cuda_build_takes_the_cuda_index(tmp_path: Path) -> None:
    engine, log = recording_engine(tmp_path, "docker")
    catalog = load_catalog(SHIPPED / "catalog.yaml")
    build_image(
        "pytorch", engine, "b", None, catalog=catalog, project=project_dir(tmp_path), flavour="cuda"
    )
    (args,) = calls(log)
    assert f"PIP_EXTRA_INDEX_URL={catalog.get('pytorch').extra_index_url['cuda']}" in args
    assert "--format" not in args and "--network" not in args and "PIP_NO_INDEX=1" not in args


def test_build_images_goes_parents_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, log = recording_engine(tmp_path)
    monkeypatch.setattr(
        images,
        "build_project_wheel",
        lambda dest, wheelhouse: (dest / "werkhub-0.1.0-py3-none-any.whl").touch(),
    )
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    lines: list[str] = []
    built = build_images(
        ["pytorch"],
        engine,
        catalog=load_catalog(SHIPPED / "catalog.yaml"),
        wheelhouse=wheelhouse,
        base_image="localhost/debian",
        prefix="site/",
        tag="7",
        log=lines.append,
    )
    assert built == {"base": "site/base:7", "pytorch": "site/pytorch:7"}
    base_args, child_args = calls(log)
    assert "BASE_IMAGE=localhost/debian" in base_args
    assert "BASE_IMAGE=site/base:7" in child_args
    assert lines[0].startswith("[1/2] site/base:7 FROM localhost/debian, offline")


def test_missing_wheelhouse_is_an_error(tmp_path: Path) -> None:
    engine, _ = recording_engine(tmp_path)
    with pytest.raises(ImageError, match="does not exist"):
        build_image("base", engine, "b", tmp_path / "nowhere", project=project_dir(tmp_path))


def test_wheelhouse_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(
        images, "run", lambda command, **kw: commands.append(list(map(str, command)))
    )
    wheel = tmp_path / "werkhub-0.1.0-py3-none-any.whl"
    monkeypatch.setattr(images, "build_project_wheel", lambda dest, source=None: wheel)
    catalog = load_catalog(SHIPPED / "catalog.yaml")
    images.create_wheelhouse(tmp_path, catalog, ["pytorch"], flavour="cuda")
    command, backend = commands
    assert backend[-1].startswith("hatchling")  # werkhub's wheel rebuilds offline from it
    assert command[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in command
    pairs = set(pairwise(command))
    assert ("--python-version", "3.11.2") in pairs and ("--implementation", "cp") in pairs
    assert {("--platform", p) for p in images.TARGET_PLATFORMS} <= pairs
    assert ("--extra-index-url", catalog.get("pytorch").extra_index_url["cuda"]) in pairs
    assert ("-r", str(SHIPPED / "base" / "requirements.txt")) in pairs
    assert command[-1] == f"{wheel}[notebook]"
    commands.clear()
    images.create_wheelhouse(tmp_path, catalog, ["base"], extra_index=False)
    assert "--extra-index-url" not in commands[0]


# --- engines and the command line ---------------------------------------------------------


def fake_tool(folder: Path, name: str, version: str, info_rc: int) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(
        f'#!/bin/sh\ncase "$1" in --version) echo "{version}";; info) exit {info_rc};; esac\n'
    )
    script.chmod(0o755)


def test_engine_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("WERKHUB_CONTAINER_ENGINE", raising=False)
    with pytest.raises(ContainerError, match="no container engine"):
        detect_engine()
    fake_tool(bin_dir, "docker", "Docker version 28.2.2", info_rc=1)  # CLI without daemon
    fake_tool(bin_dir, "podman", "podman version 4.3.1", info_rc=0)
    assert detect_engine().name == "podman"
    with pytest.raises(ContainerError, match="daemon does not answer"):
        detect_engine("docker")
    fake_tool(bin_dir, "docker", "Docker version 28.2.2", info_rc=0)
    assert detect_engine() == Engine("docker", str(bin_dir / "docker"), {"DOCKER_BUILDKIT": "1"})
    monkeypatch.setenv("WERKHUB_CONTAINER_ENGINE", "podman")
    assert detect_engine().name == "podman"
    fake_tool(bin_dir, "docker", "podman version 4.3.1", info_rc=0)  # podman-docker's shim
    assert detect_engine("docker").name == "podman"


def test_podman_env_keeps_an_existing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    assert podman_env() == {"CONTAINERS_CONF": str(SHIPPED / "containers.conf")}
    monkeypatch.setenv("CONTAINERS_CONF", "/etc/elsewhere.conf")
    assert podman_env() == {}


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="werkhub")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("images", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("base\tFROM ") and out[1].startswith("pytorch\tFROM base\tGPU-capable")
    bad = write_catalog(tmp_path, [entry("aa", "bb"), entry("bb", "aa")])
    assert cli("images", "build", "--catalog", str(bad)) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "parent cycle" in err


def test_cli_build_options_parse() -> None:
    parser = argparse.ArgumentParser(prog="werkhub")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["images", "build", "pytorch", "--offline", "w", "--cuda"])
    assert args.names == ["pytorch"] and args.offline == Path("w") and args.cuda
    args = parser.parse_args(["images", "wheelhouse", "dir", "--no-extra-index"])
    assert args.dest == Path("dir") and args.no_extra_index and args.names == []


def test_shipped_containers_conf() -> None:
    text = (SHIPPED / "containers.conf").read_text()
    for setting in ('runtime = "runc"', 'cgroup_manager = "cgroupfs"', "default_ulimits = []"):
        assert setting in text
