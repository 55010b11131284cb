"""The Python API as a notebook uses it: wrong argument types are one-line InputErrors that say what to pass,
NumPy seeds work, and a saved result reads back with the types it was saved with."""

from __future__ import annotations

import math

import numpy as np
import pytest

import moesim
from moesim.capacity import measure
from moesim.errors import InputError
from moesim.slo import Slo

TRAIN = "switch-base-128-train"


def test_numpy_seeds_run_save_and_load(tmp_path):
    s = moesim.load_scenario(TRAIN)
    r = moesim.simulate(s, seed=np.int64(2))
    r.save(tmp_path / "a")
    assert moesim.SimResult.load(tmp_path / "a" / "summary.json").seed == 2  # the folder or its summary.json
    assert r.summary == moesim.simulate(s, seed=2).summary


@pytest.mark.parametrize("seed", [True, -1, 1.5, 2**64])
def test_a_bad_seed_is_one_line(seed):
    with pytest.raises(InputError, match=r"seed = .*: expected a whole number from 0 to 2\*\*63 - 1"):
        moesim.simulate(moesim.load_scenario(TRAIN), seed=seed)


def test_wrong_argument_types_say_what_to_pass():
    with pytest.raises(InputError, match="pass a Scenario: moesim.load_scenario"):
        moesim.simulate(TRAIN)
    with pytest.raises(InputError, match="for a mapping use moesim.loader.scenario_from_dict"):
        moesim.load_scenario({"name": "x"})
    with pytest.raises(InputError, match="a list of 'path=value' strings"):
        moesim.load_scenario(TRAIN, "routing.capacity_factor=2.0")
    with pytest.raises(InputError, match=r"a limit's key ends in _s here: ttft_p99_s"):
        Slo({"ttft_p99": 2.0})
    serve = moesim.load_scenario("mixtral-8x7b-h100-serve-online")
    with pytest.raises(InputError, match="n_requests = 0: a whole number of requests, at least 2"):
        measure(serve, 10.0, "ttft_p99=2", n_requests=0)
    assert measure(serve, 10.0, "ttft_p99=2", n_requests=300).holds  # the --slo text works as the Slo


def test_a_saved_results_tables_and_summary_read_back_as_saved(tmp_path):
    s = moesim.load_scenario("mixtral-8x7b-h100-serve-online", [
        "workload.arrival.n_requests=300", "workload.output_tokens={dist: lognormal, median: 3, sigma: 1}"])
    r = moesim.simulate(s)
    r.save(tmp_path / "r")
    back = moesim.SimResult.load(tmp_path / "r")
    tpot, saved = np.asarray(back.tables["requests"]["tpot_s"]), np.asarray(r.tables["requests"]["tpot_s"], float)
    assert tpot.dtype.kind == "f" and np.isnan(saved).any()  # one-token requests have no TPOT: NaN, not text
    np.testing.assert_allclose(tpot, saved, equal_nan=True)
    assert list(back.tables["requests"]["rejected"]) == [bool(x) for x in r.tables["requests"]["rejected"]]
    train = moesim.simulate(moesim.load_scenario(TRAIN, ["workload.total_tokens=null"]))
    train.save(tmp_path / "t")
    assert math.isnan(moesim.SimResult.load(tmp_path / "t").summary["run_time_days"])  # NaN, not None
