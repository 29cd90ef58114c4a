"""The federated template's Flower app as files: what it imports (flwr and numpy only: it
runs in .venv-flower), its generator copy, its run config, and its data format and command."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import ROOT, TEMPLATES

APP = TEMPLATES / "federated-quality-inspection"
PACKAGE = APP / "fedinspect"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"


@pytest.fixture(scope="module")
def data() -> Iterator[ModuleType]:
    """The app's data module, imported from the template folder."""
    sys.path.insert(0, str(APP))
    try:
        from fedinspect import data

        yield data
    finally:
        sys.path.remove(str(APP))
        for name in [n for n in sys.modules if n.split(".")[0] == "fedinspect"]:
            del sys.modules[name]


def test_the_app_imports_only_flwr_numpy_and_itself() -> None:
    allowed = {"flwr", "numpy", "fedinspect", *sys.stdlib_module_names}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                lazy = path.name == "surfaces.py" and top in ("matplotlib", "PIL")
                assert top in allowed or lazy, f"{path.name} imports {name}"


def test_the_generator_is_the_quality_inspection_templates() -> None:
    copy = (PACKAGE / "surfaces.py").read_bytes()
    assert copy == (TEMPLATES / "quality-inspection" / "surfaces.py").read_bytes()


def test_pyproject_names_the_components_and_every_config_key_the_app_reads() -> None:
    project = tomllib.loads((APP / "pyproject.toml").read_text())
    app = project["tool"]["flwr"]["app"]
    assert app["components"] == {
        "serverapp": "fedinspect.server_app:app",
        "clientapp": "fedinspect.client_app:app",
    }
    config = app["config"]
    assert config["secure-aggregation"] is False and config["record-messages"] is False
    read = set()
    for name in ("server_app.py", "client_app.py", "task.py"):
        source = (PACKAGE / name).read_text()
        read |= set(re.findall(r'(?<!node_)config\.get\("([a-z0-9-]+)"', source))
        read |= set(re.findall(r'run_config\(\w+(?:\.context)?\)\.get\("([a-z0-9-]+)"', source))
    # the round instructions (task.train_config) are not run config keys
    read -= {"server-round", "batch-size", "learning-rate", "local-epochs", "proximal-mu"}
    assert read, "no config keys found"
    assert read <= set(config), sorted(read - set(config))


def test_party_mixes_are_non_iid(data: ModuleType) -> None:
    for party, main in data.PARTIES.items():
        _, labels = data.make_party(party, 400, 32, seed=1)
        counts = np.bincount(labels, minlength=4)
        main_index = data.CLASSES.index(main)
        assert counts[0] > 150  # good parts
        assert counts[main_index] > 5 * (counts[1:].sum() - counts[main_index])
    _, test_labels = data.make_test_set(400, 32, seed=1)
    assert np.bincount(test_labels, minlength=4).min() > 70  # mixed and balanced
    with pytest.raises(ValueError, match="unknown party"):
        data.make_party("bakery", 10)


def test_prepare_writes_what_the_client_reads(data: ModuleType, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(str(FLOWER_PYTHON), "-m", "fedinspect.data", "prepare", "--party", "supplier"),
            *("--out", str(tmp_path / "supplier"), "--n", "50"),
        ],
        cwd=APP,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "supplier: 50 images" in result.stdout
    images, labels = data.load_party(tmp_path / "supplier")
    expected = data.make_party("supplier", 50)
    np.testing.assert_array_equal(images, expected[0])
    np.testing.assert_array_equal(labels, expected[1])


def test_a_data_folder_that_does_not_fit_is_refused_with_a_sentence(
    data: ModuleType,
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match="no data in"):
        data.load_party(tmp_path)
    np.savez(tmp_path / "surfaces.npz", images=np.zeros((3, 16, 16)), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 32, 32\)"):
        data.load_party(tmp_path)
    np.savez(tmp_path / "surfaces.npz", images=np.zeros((2, 32, 32)), labels=np.array([0, 9]))
    with pytest.raises(ValueError, match="labels must be class indices"):
        data.load_party(tmp_path)
