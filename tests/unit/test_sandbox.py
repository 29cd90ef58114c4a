"""The sandbox's pure rules: the bwrap argv, devices, uids, limits, cgroup plans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from werkhub.sandbox.spec import (
    Limits,
    SandboxError,
    SandboxSpec,
    account_files,
    build_argv,
    cgroup_v1_files,
    cgroup_v2_files,
    choose_uid,
    describe,
    device_binds,
    parse_size,
    unit_indexes,
)

STATE = "/srv/wh/.werkhub"
HOME = f"{STATE}/homes/ann"


def spec(**kw: object) -> SandboxSpec:
    base: dict[str, object] = {
        "command": ("python", "-m", "jupyterhub.singleuser"),
        "home": HOME,
        "read_only": ("/opt/py", "/srv/wh/.venv", "/srv/wh/hub"),
        "hidden_dirs": (STATE,),
        "symlinks": (("usr/bin", "/bin"),),
    }
    base.update(kw)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_namespaces_and_no_network_namespace() -> None:
    argv = build_argv(spec())
    for flag in ("--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert "--unshare-net" not in argv and "--share-net" not in argv  # hub on 127.0.0.1
    assert "--unshare-user" in argv  # not root: an unprivileged user namespace
    assert argv[argv.index("--proc") + 1] == "/proc" and argv[argv.index("--dev") + 1] == "/dev"
    assert argv[argv.index("--") + 1 :] == ["python", "-m", "jupyterhub.singleuser"]


def test_only_the_home_is_writable_and_read_only_paths_are_read_only() -> None:
    argv = build_argv(spec(writable=("/srv/wh/.werkhub/jobs/7",)))
    assert pairs(argv, "--bind") == [(HOME, HOME), ("/srv/wh/.werkhub/jobs/7",) * 2]
    ro = dict(pairs(argv, "--ro-bind"))
    assert {"/usr", "/etc", "/opt/py", "/srv/wh/.venv", "/srv/wh/hub"} <= set(ro)
    assert STATE not in ro and "/" not in ro  # the state folder is never bound
    assert argv[argv.index("--chdir") + 1] == HOME


def test_parents_are_made_traversable_and_nothing_outside_shows() -> None:
    argv = build_argv(spec())
    made = [argv[i + 1] for i, a in enumerate(argv) if a == "--dir"]
    # parents of bound folders are made 0755 on the sandbox's empty root, once each
    assert made == ["/opt", "/srv", "/srv/wh", STATE, f"{STATE}/homes"]
    for i, a in enumerate(argv):
        if a == "--dir":
            assert argv[i - 2 : i] == ["--perms", "0755"]


def test_state_below_a_read_only_folder_is_covered_before_the_home_is_bound() -> None:
    argv = build_argv(spec(read_only=("/srv/wh",), hidden_files=("/srv/wh/werkhub.yaml",)))
    tmpfs = argv.index("--tmpfs", argv.index("--ro-bind", argv.index("/srv/wh") - 1))
    assert argv[tmpfs + 1] == STATE
    assert ("/dev/null", "/srv/wh/werkhub.yaml") in pairs(argv, "--ro-bind")
    assert argv.index(HOME) > tmpfs  # the home is bound after the cover
    # below a host folder the parents exist already: no --dir outside the cover
    assert "/srv/wh" not in [argv[i + 1] for i, a in enumerate(argv) if a == "--dir"]


def test_hidden_paths_not_below_a_bound_folder_need_no_cover() -> None:
    argv = build_argv(spec(hidden_files=("/etc/werkhub.yaml", "/root/x.yaml")))
    assert ("/dev/null", "/etc/werkhub.yaml") in pairs(argv, "--ro-bind")
    assert ("/dev/null", "/root/x.yaml") not in pairs(argv, "--ro-bind")


def test_root_drops_to_the_users_uid_without_capabilities() -> None:
    argv = build_argv(spec(uid=200_001, gid=200_001))
    assert "--unshare-user" not in argv
    tail = argv[argv.index("/usr/bin/setpriv") :]
    assert tail[:7] == [
        "/usr/bin/setpriv",
        "--reuid=200001",
        "--regid=200001",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ]
    with pytest.raises(SandboxError, match="never runs as root"):
        build_argv(spec(uid=0, gid=0))
    with pytest.raises(SandboxError, match="together"):
        build_argv(spec(uid=5))


def test_the_account_files_are_bound_over_etc_after_it() -> None:
    files = (("/srv/wh/.werkhub/sandbox/200001/passwd", "/etc/passwd"),)
    argv = build_argv(spec(uid=200_001, gid=200_001, files=files))
    binds = pairs(argv, "--ro-bind")
    assert binds.index(("/etc", "/etc")) < binds.index(files[0])
    assert argv.index("--ro-bind", argv.index(files[0][0]) - 1) < argv.index("--")


HOST_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "ann:x:1000:1000::/home/ann:/bin/sh\n"
    "old:x:200001:200001::/x:/bin/sh\n"
)
HOST_GROUP = "root:x:0:\nann:x:1000:\n"


def test_account_files_name_the_person_and_replace_clashing_entries() -> None:
    passwd, group = account_files("ann", 200_001, HOME, HOST_PASSWD, HOST_GROUP)
    lines = passwd.splitlines()
    assert lines[0] == "root:x:0:0:root:/root:/bin/bash"
    # the host's own 'ann' (uid 1000) and the stale owner of uid 200001 give way
    assert [ln for ln in lines if ln.startswith("ann:") or ":200001:" in ln] == [
        f"ann:x:200001:200001:werkhub user ann:{HOME}:/bin/bash"
    ]
    assert group.splitlines() == ["root:x:0:", "ann:x:200001:"]
    for bad in ("a:b", "a\nroot:x:0:0::/:/bin/sh"):
        with pytest.raises(SandboxError, match="account entry"):
            account_files(bad, 200_001, HOME, HOST_PASSWD, HOST_GROUP)
    with pytest.raises(SandboxError, match="account entry"):
        account_files("ann", 200_001, "/home/a:b", HOST_PASSWD, HOST_GROUP)


def test_environment_never_goes_on_the_command_line() -> None:
    argv = build_argv(spec())
    assert not {"--setenv", "--clearenv", "--unsetenv"} & set(argv)


def test_relative_paths_and_empty_commands_are_refused() -> None:
    with pytest.raises(SandboxError, match="absolute"):
        build_argv(spec(home="homes/ann"))
    with pytest.raises(SandboxError, match="command"):
        build_argv(spec(command=()))


def test_only_booked_devices_and_control_devices() -> None:
    present = ["nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm", "null"]
    binds = device_binds([2], present, "/tmp/fake")
    assert binds == (
        ("/tmp/fake/nvidia2", "/dev/nvidia2"),
        ("/tmp/fake/nvidiactl", "/dev/nvidiactl"),
        ("/tmp/fake/nvidia-uvm", "/dev/nvidia-uvm"),
    )
    assert device_binds([], present) == ()  # CPU only: not even the control devices
    assert device_binds([7], present) == (
        ("/dev/nvidiactl", "/dev/nvidiactl"),
        ("/dev/nvidia-uvm", "/dev/nvidia-uvm"),
    )
    argv = build_argv(spec(devices=binds))
    assert pairs(argv, "--dev-bind")[0] == ("/tmp/fake/nvidia2", "/dev/nvidia2")
    assert "/tmp/fake/nvidia0" not in argv and "/dev/nvidia0" not in argv


def test_unit_indexes() -> None:
    assert unit_indexes("n1/3,n1/0/3g.40gb-1, n1/3") == [0, 3]
    assert unit_indexes("") == []
    with pytest.raises(SandboxError, match="unit"):
        unit_indexes("n1/x")


def test_uids_are_stable_unique_and_skip_os_accounts() -> None:
    assigned = {"ann": 200_000}
    assert choose_uid("ann", assigned, 200_000, 10) == 200_000
    assert choose_uid("bob", assigned, 200_000, 10, lambda uid: uid == 200_001) == 200_002
    with pytest.raises(SandboxError, match="uid_count"):
        choose_uid("cid", {"a": 1, "b": 2}, 1, 2)


def test_sizes_and_limit_plans() -> None:
    assert parse_size("512M") == 512 * 1024**2 and parse_size("1.5G") == 3 * 1024**3 // 2
    assert parse_size("") is None
    with pytest.raises(SandboxError, match="size"):
        parse_size("lots")
    limits = Limits(memory_bytes=2**30, cpu_cores=1.5, processes=256)
    v1 = cgroup_v1_files(limits)
    assert v1["memory"]["memory.limit_in_bytes"] == str(2**30)
    assert v1["pids"] == {"pids.max": "256"}
    assert v1["cpu"] == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "150000"}
    assert cgroup_v2_files(limits) == {
        "memory.max": str(2**30),
        "memory.swap.max": "0",
        "pids.max": "256",
        "cpu.max": "150000 100000",
    }
    assert cgroup_v1_files(Limits()) == {} and cgroup_v2_files(Limits()) == {}
    assert describe(limits, "cgroup v1") == (
        "cgroup v1: memory 1024 MiB, cpu 1.5 cores, processes 256"
    )
    assert describe(Limits(), "none") == "none: no limits configured"


def test_configurer_turns_sign_up_off_and_marks_single_team_without_a_sandbox() -> None:
    from traitlets.config import Config

    from werkhub.app.configurer import Runtime, apply_config
    from werkhub.config.paths import StatePaths
    from werkhub.config.schema import WerkhubConfig

    state = StatePaths.at("/srv/wh/.werkhub")
    cfg = WerkhubConfig()
    boxed, rt = Config(), Runtime(state=state, python="/py", config_file="/srv/wh/werkhub.yaml")
    apply_config(cfg, boxed, rt)
    settings = boxed.WerkhubLocalSpawner.sandbox
    assert settings["state_root"] == "/srv/wh/.werkhub"
    assert settings["hidden"] == ["/srv/wh/werkhub.yaml"]
    assert boxed.WerkhubAuthenticator.allow_signup is True
    assert boxed.JupyterHub.template_vars["werkhub_single_team"] == ""
    env = next(s for s in boxed.JupyterHub.services if s["name"] == "werkhub")["environment"]
    assert env["WERKHUB_SANDBOX_SETTINGS"].startswith("{")

    for runtime, why in (
        (Runtime(state=state, python="/py", sandbox=False, sandbox_note="no bwrap"), "no bwrap"),
        (Runtime(state=state, python="/py"), "spawner.sandbox is off"),
    ):
        off = WerkhubConfig.model_validate({"spawner": {"sandbox": "off"}})
        plain = Config()
        apply_config(off if "off" in why else cfg, plain, runtime)
        assert plain.WerkhubLocalSpawner.sandbox == {}
        assert plain.WerkhubAuthenticator.allow_signup is False
        assert why in plain.JupyterHub.template_vars["werkhub_single_team"]
        env = next(s for s in plain.JupyterHub.services if s["name"] == "werkhub")["environment"]
        assert env["WERKHUB_SANDBOX_SETTINGS"] == ""


def test_a_root_run_werkhub_without_a_sandbox_still_gives_each_person_a_uid() -> None:
    from traitlets.config import Config

    from werkhub.app.configurer import Runtime, apply_config
    from werkhub.config.paths import StatePaths
    from werkhub.config.schema import WerkhubConfig

    state = StatePaths.at("/srv/wh/.werkhub")
    for cfg, rt in (
        (WerkhubConfig(), Runtime(state=state, python="/py", sandbox=False, as_root=True)),
        (
            WerkhubConfig.model_validate({"spawner": {"sandbox": "off"}}),
            Runtime(state=state, python="/py", as_root=True),
        ),
    ):
        c = Config()
        apply_config(cfg, c, rt)
        settings = c.WerkhubLocalSpawner.sandbox
        assert settings["isolation"] == "uid" and settings["state_root"] == "/srv/wh/.werkhub"
        env = next(s for s in c.JupyterHub.services if s["name"] == "werkhub")["environment"]
        assert json.loads(env["WERKHUB_SANDBOX_SETTINGS"])["isolation"] == "uid"
        single = c.JupyterHub.template_vars["werkhub_single_team"]
        assert "own uid" in single and "not sandboxed" in single
        assert c.WerkhubAuthenticator.allow_signup is False  # still single-team
    boxed = Config()
    apply_config(WerkhubConfig(), boxed, Runtime(state=state, python="/py", as_root=True))
    assert boxed.WerkhubLocalSpawner.sandbox["isolation"] == "bubblewrap"


def test_uid_only_commands_drop_root_like_the_sandbox() -> None:
    from werkhub.sandbox.spec import drop_to

    argv = drop_to(200_002, 200_002, ["/bin/sh", "-c", "id -u"])
    assert argv[:8] == [
        "/usr/bin/setpriv",
        "--reuid=200002",
        "--regid=200002",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    assert argv[8:] == ["/bin/sh", "-c", "id -u"]
    with pytest.raises(SandboxError, match="never runs as root"):
        drop_to(0, 5, ["/bin/true"])
    with pytest.raises(SandboxError, match="needs a command"):
        drop_to(5, 5, [])


def test_sweep_removes_only_old_empty_cgroups(tmp_path: Path) -> None:
    import os
    import time

    from werkhub.sandbox.host import sweep_cgroups

    parent = tmp_path / "memory" / "werkhub"
    old_empty, old_busy, young = (parent / n for n in ("server-1", "job-2", "server-3"))
    for folder in (old_empty, old_busy, young):
        folder.mkdir(parents=True)
    (old_busy / "cgroup.procs").write_text("4242\n")
    long_ago = time.time() - 3600
    for folder in (old_empty, old_busy):
        os.utime(folder, (long_ago, long_ago))
    # (a real cgroup folder holds its control files and is still removed by rmdir; a
    # plain folder stands in for an empty one here)
    assert sweep_cgroups(tmp_path, older_than_s=600) == [old_empty]
    assert old_busy.exists() and young.exists()
    assert sweep_cgroups(tmp_path / "nothing-here") == []
