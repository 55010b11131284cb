"""Requests a serving run can never serve: over model.max_seq_len, a whole prompt over the token budget
without chunked prefill, or over the KV cache. Bounded lengths are refused as the scenario is read; unbounded
ones (lognormal without max, a trace) one by one at arrival, counted by reason and said under the table."""

from __future__ import annotations

import numpy as np
import pytest

import moesim
from moesim.cli import main
from moesim.engine.serving.batching import RequestBook
from moesim.engine.serving.rejections import (
    NOT_REJECTED,
    OVER_BATCH_TOKENS,
    OVER_KV_CACHE,
    OVER_MAX_SEQ_LEN,
    RequestLimits,
    mark_rejected,
    reject_reasons,
    rejected_line,
    rejection_keys,
)
from moesim.errors import InputError
from moesim.loader import load_scenario, scenario_from_dict
from moesim.schemas.request_limits import max_tabulated_batch_tokens

DISAGG = "deepseek-v3-h800-serve-disagg"


def serving(prompt: dict, output: dict | None = None, max_seq_len: int = 4096, n: int = 60, trace=None,
            model: str = "llama-2-7b", **workload) -> dict:
    """A small one-A100 serving scenario as plain data (Poisson arrivals, or ``trace``'s)."""
    arrival = ({"process": "trace", "trace": str(trace), "n_requests": n} if trace else
               {"process": "poisson", "rate_per_s": 20.0, "n_requests": n})
    return {"name": "limits", "model": {"preset": model, "max_seq_len": max_seq_len},
            "hardware": {"preset": "a100-80gb", "node": {"devices_per_node": 1}}, "plan": {"dp": 1},
            "workload": {"kind": "serving", "arrival": arrival, "prompt_tokens": prompt,
                         "output_tokens": output or {"dist": "fixed", "value": 16}} | workload}


LOGNORMAL = {"dist": "lognormal", "median": 1500, "sigma": 1.0}  # no max: ~20% of prompts over 3,000 tokens


# ------------------------------------------------------------------ reasons (pure)
def test_the_first_reason_checked_is_the_one_kept():
    limits = RequestLimits(max_seq_len=1000, prefill_budget_tokens=500, kv_engine_tokens=800)
    prompt = np.array([100, 990, 600, 450, 400])
    output = np.array([10, 20, 10, 400, 10])
    # 1000 > max_seq_len (and KV); 610 over the budget; 850 over the KV only; the last fits everything
    got = reject_reasons(prompt, output, prompt, limits)
    assert got.tolist() == [NOT_REJECTED, OVER_MAX_SEQ_LEN, OVER_BATCH_TOKENS, OVER_KV_CACHE, NOT_REJECTED]
    chunked = RequestLimits(1000, None, 800)  # with chunked prefill no prompt is over a budget
    assert reject_reasons(prompt, output, prompt, chunked).tolist() == [0, OVER_MAX_SEQ_LEN, 0, OVER_KV_CACHE, 0]
    cached = reject_reasons(prompt, output, prompt // 2, limits)  # a cached prefix leaves 300 to prefill
    assert cached[2] == NOT_REJECTED


def test_a_second_check_keeps_the_earlier_reason_and_adds_new_ones():
    book = RequestBook(np.array([10, 10, 10]), np.array([1, 1, 1]))
    mark_rejected(book, np.array([OVER_KV_CACHE, 0, 0], np.int8))
    mark_rejected(book, np.array([OVER_MAX_SEQ_LEN, OVER_KV_CACHE, 0], np.int8))
    assert book.reject_reason.tolist() == [OVER_MAX_SEQ_LEN, OVER_KV_CACHE, NOT_REJECTED]
    assert book.rejected.tolist() == [True, True, False]


def test_the_note_says_how_many_and_why():
    limits = RequestLimits(131_328, 8192, 1_836_132)
    one = rejection_keys(np.array([0, 1, 1, 0] + [1] * 10, np.int8), limits)
    assert one["rejected_max_seq_len_requests"] == 12 and one["rejected_kv_cache_requests"] == 0
    assert one["rejected_note"] == ("12 requests rejected at arrival, never served: prompt + output over "
                                    "model.max_seq_len (131,328 tokens)")
    both = rejection_keys(np.array([1, 2, 3, 3], np.int8), limits)["rejected_note"]
    assert both.startswith("4 requests rejected at arrival, never served: 1 prompt + output over model.max_seq_len")
    assert "; 1 prompt over workload.max_batch_tokens (8,192 tokens) with workload.chunked_prefill false" in both
    assert both.endswith("; 2 prompt + output over the KV cache of one engine (1,836,132 tokens)")
    assert rejection_keys(np.zeros(3, np.int8), limits)["rejected_note"] == ""
    # a result saved before the reasons were kept still says how many
    assert rejected_line({"rejected_requests": 3}) == "3 requests rejected at arrival, never served"
    assert rejected_line({"rejected_requests": 0}) == ""


# ------------------------------------------------------------------ bug 1: over model.max_seq_len
def test_unbounded_prompts_over_max_seq_len_are_rejected_not_served():
    r = moesim.simulate(scenario_from_dict(serving(LOGNORMAL, max_seq_len=3000)))
    req, s = r.tables["requests"], r.summary
    over = np.asarray(req["prompt_tokens"]) + np.asarray(req["output_tokens"]) > 3000
    assert 0 < over.sum() < over.size  # the draw has both kinds
    assert np.asarray(req["rejected"])[over].all() and np.isnan(np.asarray(req["finish_s"])[over]).all()
    assert s["rejected_max_seq_len_requests"] == s["rejected_requests"] == int(over.sum())
    assert s["served_requests"] == over.size - over.sum()
    assert s["rejected_note"].endswith("prompt + output over model.max_seq_len (3,000 tokens)")


def test_a_trace_row_over_max_seq_len_is_rejected(tmp_path):
    trace = tmp_path / "tr.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,1000,10\n1.0,200000,10\n2.0,5000,10\n")
    raw = serving({"dist": "trace"}, {"dist": "trace"}, max_seq_len=40_960, n=3, trace=trace)
    s = moesim.simulate(scenario_from_dict(raw))
    assert s.tables["requests"]["rejected"].tolist() == [False, True, False]
    assert (s.summary["served_requests"], s.summary["rejected_max_seq_len_requests"]) == (2, 1)
    assert s.summary["rejected_kv_cache_requests"] == 0


def test_bounded_lengths_over_max_seq_len_are_refused_up_front():
    with pytest.raises(InputError, match=r"prompt \+ output tokens can reach 3016, more than model.max_seq_len \(3000\)"):
        scenario_from_dict(serving({"dist": "lognormal", "median": 1500, "sigma": 1.0, "max": 3000}, max_seq_len=3000))


def test_requests_too_long_for_the_kv_cache_keep_their_own_reason():
    raw = serving({"dist": "uniform", "low": 100, "high": 3000}, kv_cache_fraction=0.015, n=40)
    s = moesim.simulate(scenario_from_dict(raw)).summary
    assert s["rejected_kv_cache_requests"] == s["rejected_requests"] > 0
    assert s["rejected_max_seq_len_requests"] == s["rejected_batch_tokens_requests"] == 0
    assert "over the KV cache of one engine" in s["rejected_note"]


# ------------------------------------------------------------------ bug 2: whole prompts over the budget
def test_a_bounded_prompt_over_the_budget_without_chunking_is_refused_naming_both_fields():
    raw = serving({"dist": "uniform", "low": 100, "high": 3000}, chunked_prefill=False, max_batch_tokens=2048)
    with pytest.raises(InputError) as info:
        scenario_from_dict(raw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("workload.max_batch_tokens = 2048: with workload.chunked_prefill false")
    assert "the longest prompt has 3,000 tokens; allowed: workload.max_batch_tokens >= 3,000" in msg
    raw["workload"]["max_batch_tokens"] = 3000  # exactly the longest prompt: accepted
    scenario_from_dict(raw)
    raw["workload"].update(max_batch_tokens=2048, chunked_prefill=True)
    scenario_from_dict(raw)


def test_a_cached_prefix_is_not_counted_against_the_budget():
    raw = serving({"dist": "fixed", "value": 3000}, chunked_prefill=False, max_batch_tokens=2048, prefix_cache_hit=0.5)
    scenario_from_dict(raw)  # 1,500 left to prefill
    raw["workload"]["prefix_cache_hit"] = 0.25
    with pytest.raises(InputError, match=r"(2,250 of them left to prefill after workload.prefix_cache_hit 0.25)"):
        scenario_from_dict(raw)


def test_the_prefill_pool_budget_is_the_one_named_when_it_is_set():
    # DeepSeek's disaggregated scenario: prompts up to 32,000 tokens, 56.3% of each cached
    load_scenario(DISAGG, ["workload.chunked_prefill=false"])  # 13,984 to prefill under the workload's 16,384
    with pytest.raises(InputError, match=r"^workload.max_batch_tokens = 16384: .* allowed: workload.max_batch_tokens >= 32,000"):
        load_scenario(DISAGG, ["workload.chunked_prefill=false", "workload.prefix_cache_hit=0"])
    with pytest.raises(InputError, match=r"^workload.disaggregation.prefill.max_batch_tokens = 8192: .*>= 13,984"):
        load_scenario(DISAGG, ["workload.chunked_prefill=false", "workload.disaggregation.prefill.max_batch_tokens=8192"])


def test_unbounded_prompts_over_the_budget_are_rejected_at_arrival():
    raw = serving(LOGNORMAL, max_seq_len=1 << 20, chunked_prefill=False, max_batch_tokens=2048)
    r = moesim.simulate(scenario_from_dict(raw))
    over = np.asarray(r.tables["requests"]["prompt_tokens"]) > 2048
    assert 0 < over.sum() < over.size
    assert r.summary["rejected_batch_tokens_requests"] == r.summary["rejected_requests"] == int(over.sum())
    assert np.array_equal(np.asarray(r.tables["requests"]["rejected"]), over)


# ------------------------------------------------------------------ bug 3: the line under the table
def _simulate_text(tmp_path, capsys, monkeypatch, raw: dict, *sets: str) -> str:
    """What ``moesim simulate`` prints for ``raw``, each line whole (no terminal width to fold it at)."""
    import yaml

    monkeypatch.delenv("COLUMNS", raising=False)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = ["simulate", str(path)] + [x for s in sets for x in ("-s", s)]
    assert main(argv) == 0
    return capsys.readouterr().out


def test_simulate_says_how_many_were_rejected_and_why_when_the_plan_fits(tmp_path, capsys, monkeypatch):
    text = _simulate_text(tmp_path, capsys, monkeypatch, serving(LOGNORMAL, max_seq_len=3000))
    lines = [x for x in text.splitlines() if "rejected at arrival" in x]
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert lines[0].endswith("requests rejected at arrival, never served: prompt + output over model.max_seq_len "
                             "(3,000 tokens)")
    assert "fits" in text and "does not fit" not in text
    assert "rejected_note" not in text and "rejected_max_seq_len_requests" not in text  # the line says them


def test_simulate_says_nothing_of_rejections_when_there_are_none(tmp_path, capsys, monkeypatch):
    text = _simulate_text(tmp_path, capsys, monkeypatch, serving({"dist": "fixed", "value": 500}, n=10))
    assert "rejected at arrival" not in text and "rejected_requests" in text


# ------------------------------------------------------------------ bug 4: the expert-load table's budget
def test_the_most_tabulated_budget_is_named_on_max_batch_tokens(tmp_path, capsys):
    assert max_tabulated_batch_tokens(128) == 524_287 and max_tabulated_batch_tokens(256) == 262_143
    raw = serving({"dist": "fixed", "value": 500}, model="qwen3-235b-a22b", n=10)
    raw.update(hardware={"preset": "h100-sxm"}, plan={"dp": 1, "tp": 8}, routing={"distribution": "uniform"})
    raw["model"]["dtype"] = "fp8"
    raw["workload"]["max_batch_tokens"] = 4_194_304
    with pytest.raises(InputError, match=r"^workload.max_batch_tokens = 4194304: at most 524,287 with model.n_experts 128"):
        scenario_from_dict(raw)
    path = tmp_path / "q.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    assert main(["simulate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "workload.max_batch_tokens = 4194304: at most 524,287" in err and "Traceback" not in err
    raw["workload"]["max_batch_tokens"] = 524_287
    scenario_from_dict(raw)
    raw["workload"]["max_batch_tokens"] = 4_194_304
    raw["routing"] = {"distribution": "zipf"}  # sampled loads: no table by batch size
    scenario_from_dict(raw)


def test_a_pool_budget_over_the_table_names_the_pool():
    with pytest.raises(InputError, match=r"^workload.disaggregation.decode.max_batch_tokens = 300000: at most 262,143"):
        load_scenario(DISAGG, ["routing.distribution=uniform", "workload.disaggregation.decode.max_batch_tokens=300000"])
