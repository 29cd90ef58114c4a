"""What the aggregator sees: the federated quality-inspection app run in Flower's simulation
engine (Ray, in .venv-flower) with its test-only recording switch (run config
``record-messages``): the ServerApp dumps every reply it receives, as received, and each
ClientApp its true local update before it leaves the party.

Without secure aggregation a reply is the party's parameter arrays (exactly the model's
shapes) and its number of examples: no data arrays, no other values. With SecAgg+ (Flower's
SecAggPlusWorkflow and secaggplus_mod) no array the aggregator receives equals or correlates
with any single party's update, and what it recovers is only the sum: the weighted mean of
the parties' updates, up to the quantisation error.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.flower import APP, run_flower

PARTIES = ("machine-builder", "supplier", "software-house")
N_FEATURES, HIDDEN, N_CLASSES = 48, 16, 4
SHAPES = [(N_FEATURES, HIDDEN), (HIDDEN,), (HIDDEN, N_CLASSES), (N_CLASSES,)]
N_PARAMETERS = sum(int(np.prod(shape)) for shape in SHAPES)
IMAGES_PER_PARTY = (120, 90, 150)  # different weights, so that the mean is a weighted one
ROUNDS = 2


def flower(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """The app in Flower's environment, one numpy thread per process (three parties and
    Ray share two cores)."""
    return run_flower(args, cwd, timeout, {"OMP_NUM_THREADS": "1"})


@dataclass
class Recording:
    run_dir: Path
    replies: list[dict[str, Any]]
    updates: dict[int, dict[str, dict[str, np.ndarray]]]  # round -> party -> arrays
    examples: dict[str, int]
    log: str

    def global_after(self, server_round: int) -> list[np.ndarray]:
        with np.load(self.run_dir / "recorded" / f"global-round-{server_round}.npz") as saved:
            return [saved[f"a{i}"] for i in range(len(SHAPES))]

    def weighted_mean(self, server_round: int) -> list[np.ndarray]:
        total = sum(self.examples.values())
        names = ("w1", "b1", "w2", "b2")
        return [
            sum(self.examples[p] * self.updates[server_round][p][name] for p in PARTIES) / total
            for name in names
        ]


def prepare_data(root: Path) -> Path:
    """Each party's images (IMAGES_PER_PARTY), ``root/<party>/surfaces.npz``."""
    for party, n in zip(PARTIES, IMAGES_PER_PARTY, strict=True):
        prepared = flower(
            [
                *("-m", "fedinspect.data", "prepare", "--party", party),
                *("--out", str(root / party), "--n", str(n), "--seed", "3"),
            ],
            APP,
            120,
        )
        assert prepared.returncode == 0, prepared.stdout
    return root


def recording_config(secure: bool) -> dict[str, Any]:
    return {
        "num-server-rounds": ROUNDS,
        "hidden": HIDDEN,
        "n-test": 100,
        "n-reference": 100,
        "secure-aggregation": secure,
        "record-messages": True,
    }


def collect(run_dir: Path, party_out: dict[str, Path], log: str) -> Recording:
    """What the ServerApp recorded in ``run_dir`` and each party in ``party_out[party]``
    (its ``<out>/<run id>`` folder)."""
    replies = [
        pickle.loads(path.read_bytes())
        for path in sorted((run_dir / "recorded").glob("reply-*.pkl"))
    ]
    updates: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    examples = {}
    for party in PARTIES:
        for server_round in range(1, ROUNDS + 1):
            with np.load(party_out[party] / f"update-round-{server_round}.npz") as saved:
                updates.setdefault(server_round, {})[party] = {
                    k: saved[k] for k in saved.files if k != "examples"
                }
                examples[party] = int(saved["examples"])
    assert examples == dict(zip(PARTIES, IMAGES_PER_PARTY, strict=True))
    return Recording(run_dir, replies, updates, examples, log)


def record(tmp: Path, secure: bool) -> Recording:
    data_root = prepare_data(tmp / "parties")
    out = tmp / "runs"
    args = ["-m", "fedinspect.simulate", "--data-root", str(data_root), "--out", str(out)]
    for key, value in recording_config(secure).items():
        args += ["--config", f"{key}={str(value).lower()}"]
    simulated = flower(args, APP, 600)
    assert simulated.returncode == 0, simulated.stdout[-5000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "parties"]
    assert (run_dir / "final.json").is_file(), simulated.stdout[-5000:]
    party_out = {p: out / "parties" / p / run_dir.name for p in PARTIES}
    return collect(run_dir, party_out, simulated.stdout)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    yield record(tmp_path_factory.mktemp("plain"), secure=False)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    yield record(tmp_path_factory.mktemp("secagg"), secure=True)


def arrays_of(reply: dict[str, Any]) -> list[np.ndarray]:
    return [a for record in reply["content"]["arrays"].values() for a in record.values()]


def flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def test_without_secagg_replies_carry_only_the_parameters_and_the_number_of_examples(
    plain: Recording,
) -> None:
    assert len(plain.replies) == len(PARTIES) * ROUNDS  # one training reply per party and round
    for reply in plain.replies:
        content = reply["content"]
        assert reply["message_type"] == "train"
        assert list(content["arrays"]) == ["fitres.parameters"]
        arrays = arrays_of(reply)
        assert [a.shape for a in arrays] == SHAPES  # exactly the model: no data arrays
        assert all(a.dtype == np.float32 for a in arrays)
        assert sum(a.nbytes for a in arrays) == 4 * N_PARAMETERS
        assert content["metrics"] == {
            "fitres.num_examples": {
                "num_examples": content["metrics"]["fitres.num_examples"]["num_examples"]
            }
        }
        assert content["metrics"]["fitres.num_examples"]["num_examples"] in IMAGES_PER_PARTY
        # the legacy FitRes's status and (empty) metrics: nothing the party computed
        assert content["configs"] == {
            "fitres.metrics": {},
            "fitres.status": {"code": 0, "message": "Success"},
        }


def test_without_secagg_the_aggregator_sees_each_update(plain: Recording) -> None:
    """The contrast to SecAgg+: in plain FedAvg every reply is one party's true update."""
    for server_round in range(1, ROUNDS + 1):
        received = [flat(arrays_of(r)) for r in plain.replies if r["round"] == server_round]
        for party in PARTIES:
            update = flat(list(plain.updates[server_round][party].values()))
            assert any(np.array_equal(update, r) for r in received), party
        mean = plain.weighted_mean(server_round)
        for got, expected in zip(plain.global_after(server_round), mean, strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-6)


def decoded(values: list[Any]) -> list[np.ndarray]:
    """The numpy arrays among a list of byte strings (SecAgg+ sends its masked vector as
    one ``.npy`` byte string per array); keys and ciphertexts are no arrays and are left out."""
    arrays = []
    for value in values:
        if isinstance(value, bytes):
            with contextlib.suppress(ValueError, OSError, EOFError):
                arrays.append(np.load(io.BytesIO(value), allow_pickle=False))
    return arrays


def test_with_secagg_no_individual_update_reaches_the_aggregator(secure: Recording) -> None:
    assert "Secure aggregation completed" in secure.log
    assert_masked(secure)


#: A masked vector is uniform on [0, 2**32), entry by entry independent of the update, so
#: its correlation with any fixed vector of N_PARAMETERS entries is about normal with
#: standard deviation 1/sqrt(N_PARAMETERS) (0.034 for this model's 852). Six of those
#: (p = 2e-9 per comparison) tell chance from leakage: an unmasked or partly masked update
#: correlates near 1. (A fixed 0.1 was 2.9 standard deviations: a 1-in-300 false alarm.)
CORRELATION_BOUND = 6 / np.sqrt(N_PARAMETERS)
MODULUS = 2**32  # SecAggPlusWorkflow's modulus_range, which the app keeps
#: chi-square of 16 equal bins (15 degrees of freedom) at p = 1e-7
UNIFORM_CHI2 = 62.3


def assert_uniform(vector: np.ndarray) -> None:
    """The masked entries spread evenly over the modulus: a mask that left part of the
    range (or part of the vector) uncovered would pile the quantised update up there."""
    assert vector.min() >= 0 and vector.max() < MODULUS
    counts, _ = np.histogram(vector, bins=16, range=(0, MODULUS))
    expected = vector.size / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < UNIFORM_CHI2, (chi2, counts.tolist())


def assert_masked(secure: Recording) -> None:
    """No value any reply carried equals or correlates with a party's true update."""
    # SecAgg+ takes four exchanges per round (keys, shares, masked vectors, unmasking)
    assert len(secure.replies) == 4 * len(PARTIES) * ROUNDS
    masked = 0
    for reply in secure.replies:
        updates = {p: flat(list(a.values())) for p, a in secure.updates[reply["round"]].items()}
        # the parameters record is emptied by secaggplus_mod before the reply leaves
        assert all(a.size == 0 for a in arrays_of(reply)) or not arrays_of(reply)
        for record in reply["content"]["configs"].values():
            for value in record.values():
                items = value if isinstance(value, list) else [value]
                raw = [v for v in items if isinstance(v, bytes)]
                for party, update in updates.items():  # no plain float32 bytes of an update
                    needle = update.astype(np.float32).tobytes()[:64]
                    assert not any(needle in v for v in raw), party
                arrays = decoded(raw)
                if sum(a.size for a in arrays) < N_PARAMETERS:
                    continue
                masked += 1
                vector = flat(arrays)[-N_PARAMETERS:]  # after the weight SecAgg+ puts first
                assert vector.dtype.kind == "f" and np.all(vector == np.round(vector))
                assert_uniform(vector)
                for party, update in updates.items():
                    assert not np.allclose(vector, update, atol=1e-3), party
                    corr = np.corrcoef(vector, update)[0, 1]
                    assert abs(corr) < CORRELATION_BOUND, (party, corr)
    assert masked == len(PARTIES) * ROUNDS  # each party's masked vector, every round


def test_with_secagg_only_the_sum_is_recovered(secure: Recording) -> None:
    assert_sum(secure)


def assert_sum(secure: Recording) -> None:
    """The aggregate the ServerApp got from SecAgg+ is the parties' weighted mean, within
    the quantisation error: each party quantises weight x update to 2**22 levels over
    [-8, 8] (the app's secagg-max-weight 100000 is the weight's scale), and the sum is
    divided by the total weight."""
    step = 16 / 2**22
    total_weight = sum(IMAGES_PER_PARTY) / 100_000
    bound = len(PARTIES) * step / total_weight
    for server_round in range(1, ROUNDS + 1):
        mean = secure.weighted_mean(server_round)
        got = secure.global_after(server_round)
        for g, expected in zip(got, mean, strict=True):
            np.testing.assert_allclose(g, expected, atol=bound)
        # and it is no single party's update
        for party in PARTIES:
            single = flat(list(secure.updates[server_round][party].values()))
            assert np.abs(flat(got) - single).max() > 1e-2, party
