"""`moesim sweep --slo`: each point is its run at capacity under the limits (simulate --slo's search), so
plans compare at the traffic each can take; the limits are part of the sweep (resume checks them) and a
bad or misplaced --slo is refused in one line before any point runs."""

from __future__ import annotations

import json

import pytest

from moesim.capacity import max_goodput, parse_slo
from moesim.errors import InputError
from moesim.loader import load_scenario
from moesim.sweep import run_sweep
from tests.conftest import ROOT

ONLINE = ROOT / "scenarios" / "mixtral-8x7b-h100-serve-online.yaml"
SMALL = ["workload.prompt_tokens={dist: lognormal, median: 128, sigma: 0.5, max: 512}",
         "workload.output_tokens={dist: lognormal, median: 24, sigma: 0.5, max: 96}"]
SLO = "tpot_p99=0.015"


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    return out, run_sweep(str(ONLINE), grid=["workload.max_batch_seqs=64,256"], sets=SMALL, out_dir=out,
                          workers=2, slo=SLO, best="usd_per_mtok_at_capacity", durable=False)


def test_each_point_is_its_run_at_capacity(swept):
    out, outcome = swept
    rows = sorted(outcome.rows, key=lambda r: r["workload.max_batch_seqs"])
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for r in rows:  # the same capacity simulate --slo finds for that point
        s = load_scenario(ONLINE, [*SMALL, f"workload.max_batch_seqs={r['workload.max_batch_seqs']}"])
        assert r["max_goodput_req_s"] == pytest.approx(max_goodput(s, parse_slo(SLO)).max_goodput_req_s)
        assert r["slo"] == SLO and r["usd_per_mtok_at_capacity"] > 0
    assert outcome.best is min(outcome.rows, key=lambda r: r["usd_per_mtok_at_capacity"])
    assert json.loads((out / "sweep.json").read_text())["slo"] == SLO


def test_resume_with_other_limits_is_refused(swept):
    out, _ = swept
    with pytest.raises(InputError, match=r"--resume: .* other --slo \(tpot_p99=0.015 there, tpot_p99=0.02 now\)"):
        run_sweep(str(ONLINE), grid=["workload.max_batch_seqs=64,256"], sets=SMALL, out_dir=out, resume=True,
                  slo="tpot_p99=0.02", durable=False)


@pytest.mark.parametrize("scenario, slo, words", [
    (str(ROOT / "scenarios" / "mixtral-8x7b-h100-train.yaml"), SLO, "--slo applies to serving scenarios; mixtral-8x7b-h100-train is a training"),
    (str(ONLINE), "tpot_p98=1", "tpot_p98"),
])
def test_a_misplaced_or_bad_slo_is_refused_before_anything_runs(tmp_path, scenario, slo, words):
    with pytest.raises(InputError, match=words):
        run_sweep(scenario, grid=["plan.dp=8"], out_dir=tmp_path / "s", slo=slo, durable=False)
    assert not (tmp_path / "s").exists()


def test_capacity_keys_without_slo_say_how_to_get_them(tmp_path):
    with pytest.raises(InputError, match="only in capacity summaries.*sweep with --slo"):
        run_sweep(str(ONLINE), grid=["plan.dp=8"], out_dir=tmp_path / "s", best="max_goodput_req_s", durable=False)


def test_a_sweep_under_an_itl_limit_shows_itl():
    """The limit a point is held to has a column, ITL too (the default columns were TTFT and TPOT only)."""
    from moesim.sweep_table import pick_metrics

    rows = [{"status": "ok", "slo": "ttft_p99=1,itl_p99=0.08", "max_goodput_req_s": 10.0 + i,
             "output_tokens_per_s": 100.0 + i, "usd_per_mtok": 1.0, "ttft_p99_s": 0.5, "tpot_p99_s": 0.01,
             "itl_p99_s": 0.07} for i in range(2)]
    shown, _ = pick_metrics(rows, "serving")
    assert "itl_p99_s" in shown and shown.index("itl_p99_s") < 6
    assert "itl_p99_s" not in pick_metrics([{k: v for k, v in r.items() if k != "slo"} for r in rows], "serving")[0]
