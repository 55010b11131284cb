"""The README's quoted outputs are what the commands print today (a changed table row or note fails here,
not in a newcomer's terminal)."""

from __future__ import annotations

import pytest

from moesim.cli import main
from tests.conftest import console_columns

pytestmark = pytest.mark.usefixtures("eighty_columns")  # the README quotes an 80-column terminal


def _block_after(readme: str, marker: str) -> list[str]:
    """The lines of the first ```text block after the line starting with ``marker``."""
    lines = readme.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    open_ = next(i for i in range(start, len(lines)) if lines[i].startswith("```text"))
    close = next(i for i in range(open_ + 1, len(lines)) if lines[i].startswith("```"))
    return lines[open_ + 1:close]


def _printed(argv: list[str], capsys) -> list[str]:
    assert main(argv) == 0
    return [line.rstrip() for line in capsys.readouterr().out.rstrip("\n").split("\n")]


def test_quick_start_output_is_real(root, capsys):
    quoted = _block_after((root / "README.md").read_text(), "What the first command prints at the end")
    assert _printed(["simulate", "mixtral-8x7b-h100-train"], capsys) == [line.rstrip() for line in quoted]


@pytest.mark.parametrize("scenario, marker", [("mixtral-8x7b-h100-serve-tp8", "TP8 (`moesim simulate mixtral-8x7b-h100-serve-tp8`)")])
def test_decode_step_table_is_real(root, capsys, scenario, marker):
    quoted = [line.rstrip() for line in _block_after((root / "README.md").read_text(), marker)]
    printed = _printed(["simulate", scenario], capsys)
    start = printed.index(quoted[0])
    assert printed[start:start + len(quoted)] == quoted


def _summary(name: str, overrides: list[str] | None = None) -> dict:
    from moesim import load_scenario, simulate
    return simulate(load_scenario(name, overrides or []), seed=0).summary


@pytest.fixture
def prose(root) -> str:
    """The README with its line breaks as spaces, so a sentence is found whatever its wrapping."""
    return " ".join((root / "README.md").read_text().split())


def test_single_stream_prose_is_real(prose):
    """The Arrivals paragraph's one-stream figures (M2 Ultra, DGX Spark) are what the scenarios give."""
    m2 = _summary("mixtral-8x7b-m2-ultra-serve")
    assert (f"is one stream on an M2 Ultra: TTFT p50 {m2['ttft_p50_s']:.3f} s (one 256-token prefill, no queue), "
            f"e2e p50 {m2['e2e_p50_s']:.1f} s, {m2['output_tokens_per_s']:.1f} output tokens/s, "
            f"${m2['usd_per_1k_output_tokens'] * 1e3:.2f} per million output tokens.") in prose
    spark = _summary("gpt-oss-120b-dgx-spark-serve")
    assert f"llama.cpp: TPOT p50 {spark['tpot_p50_s'] * 1e3:.1f} ms (each token reads" in prose
    assert (f"TTFT p50 {spark['ttft_p50_s']:.2f} s for the median 2K-token prompt (its pp2048 is 1.06 s, SPK-08), "
            f"{spark['output_tokens_per_s']:.0f} output tokens/s, "
            f"${spark['usd_per_1k_output_tokens'] * 1e3:.2f} per million output tokens.") in prose


def test_ep_against_tp_prose_is_real(prose):
    """'EP8 and TP8 both give X ms TPOT p50' holds for both plans at the README's precision."""
    tp8 = _summary("mixtral-8x7b-h100-serve-tp8")["tpot_p50_s"] * 1e3
    ep8 = _summary("mixtral-8x7b-h100-serve-tp8", ["plan.etp=1", "plan.ep=8"])["tpot_p50_s"] * 1e3
    assert f"{tp8:.1f}" == f"{ep8:.1f}"
    assert f"EP8 and TP8 both give {tp8:.1f} ms TPOT p50" in prose


def test_sliding_window_prose_is_real(prose):
    """The gpt-oss long-prompt paragraph: the windowed plan's figures and full attention's overload."""
    win = _summary("gpt-oss-120b-h100-serve-long")
    assert (f"TTFT p99 {win['ttft_p99_s']:.2f} s, TPOT p50 {win['tpot_p50_s'] * 1e3:.0f} ms, the KV pool at most "
            f"{win['kv_utilisation_max'] * 100:.0f} % full, ${win['usd_per_mtok']:.2f} per million tokens") in prose
    full = _summary("gpt-oss-120b-h100-serve-long", ["model.local_attention=null"])
    assert full["overloaded"] and full["kv_utilisation_max"] > 0.99
    assert (f"KV full, TTFT p99 {full['ttft_p99_s']:.2f} s and growing, "
            f"TPOT p50 {full['tpot_p50_s'] * 1e3:.0f} ms") in prose


def test_dp_attention_balance_prose_is_real(prose):
    """DeepSeek-V3 DP-attention with and without the balance: throughput, TPOT and TTFT as quoted."""
    base = ["plan={dp: 8, tp: 1, pp: 1, ep: 8, dp_attention: true}", "workload.arrival={process: batch, n_requests: 2000}"]
    on = _summary("deepseek-v3-h200-serve", base + ["workload.dp_attention_balance={timeout_iters: 50, batching_wait_iters: 10}"])
    off = _summary("deepseek-v3-h200-serve", base)
    assert (f"gives {on['output_tokens_per_s']:,.0f} output tokens/s with the balance against "
            f"{off['output_tokens_per_s']:,.0f} without it (TPOT p50 {on['tpot_p50_s'] * 1e3:.0f} ms against "
            f"{off['tpot_p50_s'] * 1e3:.0f} ms; TTFT p50 {on['ttft_p50_s']:.1f} s against {off['ttft_p50_s']:.1f} s") in prose


def test_nvfp4_prose_is_real(prose):
    """The precision paragraph's Mixtral-on-B200 example, NVFP4 against FP8, as the engine gives it."""
    fp4, fp8 = (_summary("mixtral-8x7b-h100-serve", ["hardware.preset=b200", f"model.dtype={d}"]) for d in ("nvfp4", "fp8"))
    assert fp4["output_tokens_per_s"] > fp8["output_tokens_per_s"]
    assert (f"{fp4['output_tokens_per_s'] / 1e3:.0f}k against {fp8['output_tokens_per_s'] / 1e3:.0f}k output tokens/s, "
            f"TPOT p50 {fp4['tpot_p50_s'] * 1e3:.1f} against {fp8['tpot_p50_s'] * 1e3:.1f} ms, "
            f"${fp4['usd_per_mtok']:.3f} against ${fp8['usd_per_mtok']:.3f} per million tokens") in prose


def test_compare_example_prose_is_real(prose):
    """The commands table's `compare` example: TP2 replicas' TPOT p99 and throughput against TP1's."""
    tp1, tp2 = _summary("mixtral-8x7b-h100-serve"), _summary("mixtral-8x7b-h100-serve-tp2")
    shorter = (1 - tp2["tpot_p99_s"] / tp1["tpot_p99_s"]) * 100
    lower = (1 - tp2["output_tokens_per_s"] / tp1["output_tokens_per_s"]) * 100
    assert f"shows TP2 replicas' TPOT p99 {shorter:.0f} % shorter and their throughput {lower:.0f} % lower" in prose


def test_slo_capacity_example_is_real(root, capsys):
    """`simulate --slo`'s quoted probe lines (stderr) and capacity rows and notes (stdout) are today's."""
    readme = (root / "README.md").read_text()
    probes = [line.rstrip() for line in _block_after(readme, "Real output (Mixtral 8x7B FP8 on 8 H100, one replica")]
    assert probes[0] == "$ moesim simulate mixtral-8x7b-h100-serve-online --slo ttft_p99=2,tpot_p99=0.1"
    assert main(["simulate", "mixtral-8x7b-h100-serve-online", "--slo", "ttft_p99=2,tpot_p99=0.1"]) == 0
    captured = capsys.readouterr()
    assert [line.rstrip() for line in captured.err.split("\n") if line.startswith("probe ")] == probes[1:]
    printed = [line.rstrip() for line in captured.out.split("\n")]
    summary = [line.rstrip() for line in _block_after(readme, "then the serving summary of the run at capacity")]
    for line in summary:
        if not line.startswith(("│ ...", "... and")):
            assert line in printed, line


def _plan_rows(root, capsys, marker: str, argv: list[str]) -> tuple[list[str], list[str]]:
    """The table rows the README quotes in the block starting at ``marker``, and those ``moesim plan argv``
    prints on a wide terminal (the README quotes the whole table)."""
    from moesim import cli_plan

    readme = (root / "README.md").read_text()
    start = readme.index(marker)
    quoted = [line.rstrip() for line in readme[start:readme.index("```", start)].split("\n") if line.startswith("│")]
    with console_columns(cli_plan.out, 250):
        assert main(["plan", *argv]) == 0
    printed = [line.rstrip() for line in capsys.readouterr().out.split("\n") if line.startswith("│")]
    return quoted, printed


@pytest.mark.slow  # ~30 s: the README's plan search itself
def test_plan_example_table_is_real(root, tmp_path, capsys):
    """`moesim plan`'s quoted ranking (each row of its table) is what the search finds today."""
    quoted, printed = _plan_rows(
        root, capsys, "$ moesim plan mixtral-8x7b-h100-serve-online --devices 8..64 --slo ttft_p99=2,tpot_p99=0.2 --top 5",
        ["mixtral-8x7b-h100-serve-online", "--devices", "8..64", "--slo", "ttft_p99=2,tpot_p99=0.2", "--top", "5",
         "--out", str(tmp_path / "plan")])
    assert 3 <= len(quoted) <= 5  # --top 5: the shapes ranked (a shape's candidates on more devices share a row)
    assert printed == quoted


@pytest.mark.slow  # ~25 s: the README's disaggregated plan search itself
def test_disaggregated_plan_example_table_is_real(root, tmp_path, capsys, monkeypatch):
    """The disaggregated `moesim plan` example: each ranked row (estimate, whole-plan re-check) is today's."""
    import importlib.util

    import yaml

    monkeypatch.syspath_prepend(str(root / "bench"))  # bench_plan_disagg imports the script beside it
    spec = importlib.util.spec_from_file_location("bench_plan_disagg", root / "bench" / "bench_plan_disagg.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scenario = tmp_path / "mixtral-disagg.yaml"  # the file the README's example names (bench_plan_disagg writes it)
    scenario.write_text(yaml.safe_dump(bench.disaggregated(bench.SCENARIO), sort_keys=False))
    quoted, printed = _plan_rows(
        root, capsys, "$ moesim plan mixtral-disagg.yaml",
        [str(scenario), "--devices", "16,24,32", "--tp", "1,2", "--pp", "1", "--max-batch-seqs", "64,256",
         "--slo", "ttft_p99=2,tpot_p99=0.2", "--verify", "2", "--top", "6", "--out", str(tmp_path / "plan")])
    assert len(quoted) == 6
    assert printed == quoted


@pytest.mark.slow  # ~70 s each: a capacity search of one 128-GPU GPT-4-rumour cluster (one test a cluster, side by side)
@pytest.mark.parametrize("name, label", [("gpt4-rumour-a100-serve", "128 A100-80GB"),
                                         ("gpt4-rumour-h100-serve", "128 H100 SXM")])
def test_gpt4_rumour_at_capacity_table_is_real(root, capsys, name, label):
    """'GPT-4-rumour on A100 vs H100, compared at capacity': the cluster's row of the README's table."""
    import json
    import re

    readme = (root / "README.md").read_text()
    assert main(["simulate", name, "--slo", "ttft_p99=5,tpot_p99=0.2", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    limit = re.sub(r" \(stopped after [^)]*\)|; [\d.]+% over its limit:.*$", "", s["capacity_limit"])
    rate, why = re.match(r"at (\S+) req/s: (.+)$", limit).groups()
    row = (f"| {label} | {s['max_goodput_req_s']:.3f} | {s['tokens_per_s_per_device_at_capacity']:.2f} | "
           f"{s['usd_per_1k_output_tokens']:.3f} | {why} at {rate} req/s |")
    assert row in readme, row


def test_gpt4_rumour_steady_state_prose_is_real(prose):
    """The same clusters' steady-state $/Mtok at the scenarios' own load, quoted under the table."""
    a100, h100 = (_summary(f"gpt4-rumour-{gpu}-serve")["usd_per_mtok"] for gpu in ("a100", "h100"))
    assert f"steady-state ${a100:.3g} and ${h100:.3g} per million output tokens" in prose


@pytest.mark.slow  # ~10 s: the README's 12-point load sweep
def test_sliding_window_load_sweep_prose_is_real(root, tmp_path, prose, capsys):
    """The gpt-oss long-prompt paragraph's sweep over load: full attention's saturation, TTFT and
    preemptions, the windowed plan's TTFT, throughput, overload flag and TPOT, as the README words them."""
    import csv

    out = tmp_path / "sw-gptoss"
    assert main(["sweep", "gpt-oss-120b-h100-serve-long", "--grid", "workload.arrival.rate_per_s=2,3,4,5,6,7",
                 "--grid", "model.local_attention.window=128,131072", "--out", str(out), "--workers", "2"]) == 0
    capsys.readouterr()
    rows = list(csv.DictReader((out / "results.csv").open()))
    pick = {(float(r["workload.arrival.rate_per_s"]), int(float(r["model.local_attention.window"]))): r for r in rows}
    assert len(pick) == 12
    full = {rate: pick[rate, 131072] for rate in range(2, 8)}
    win = {rate: pick[rate, 128] for rate in range(2, 8)}
    saturated = [float(full[rate]["output_tokens_per_s"]) for rate in range(4, 8)]
    assert max(saturated) < 1.1 * min(saturated)  # flat: saturated
    assert f"the full-attention plan saturates near {round(sum(saturated) / 4, -2):,.0f} output tokens/s" in prose
    assert all(float(full[rate]["ttft_p99_s"]) > 30 for rate in range(4, 8)) and float(full[3]["ttft_p99_s"]) < 30
    assert f"past 30 s from 4 requests/s ({int(float(full[4]['preemptions']))} preemptions there)" in prose
    assert all(float(win[rate]["ttft_p99_s"]) < 3 for rate in range(2, 6)) and float(win[6]["ttft_p99_s"]) > 3
    assert f"up to 5 requests/s ({round(float(win[5]['output_tokens_per_s']), -2):,.0f} output tokens/s)" in prose
    assert [win[rate]["overloaded"] == "True" for rate in range(2, 8)] == [False, False, True, True, True, True]
    assert (f"(TPOT p99 {float(win[4]['tpot_p99_s']) * 1e3:.0f} ms at 4, {float(win[5]['tpot_p99_s']) * 1e3:.0f} ms "
            "at 5)") in prose


def test_validate_near_example_is_real(root, capsys):
    """`moesim validate --near mixtral-8x7b-h100-serve`'s quoted table and summary are today's."""
    readme = (root / "README.md").read_text()
    marker = "$ moesim validate --near mixtral-8x7b-h100-serve\n"
    start = readme.index(marker) + len(marker)
    quoted = [line.rstrip() for line in readme[start:readme.index("$ moesim validate --near gpt-oss", start)].split("\n")]
    from moesim import cli_sweep  # validate's table is printed there

    with console_columns(cli_sweep.out, 100):  # the README quotes a 100-column terminal
        printed = _printed(["validate", "--near", "mixtral-8x7b-h100-serve"], capsys)
    assert printed == [line for line in quoted if line]


_QWEN3_PLAN = ["plan", "mixtral-8x7b-h100-serve-online", "--set", "model={preset: qwen3-235b-a22b, dtype: fp8}",
               "--devices", "8", "--slo", "ttft_p99=2,tpot_p99=0.1"]


def _qwen3_search(tmp_path, capsys, hardware: str) -> tuple[dict, list[float]]:
    """The quick start's second command on ``hardware``: its plans.json and the nearest measurements' errors."""
    import json
    import re

    out = tmp_path / hardware
    assert main([*_QWEN3_PLAN, "--hardware", hardware, "--out", str(out)]) == 0
    near = [float(m) for m in re.findall(r"^\s+INF-\d+\s+([+-][\d.]+) %", capsys.readouterr().out, re.M)]
    return json.loads((out / "plans.json").read_text()), near


def _plan_words(plan: str) -> tuple[str, str]:
    """"dp4 tp2 pp1 ep2 batch512" -> ("DP4 with TP2 and EP2", "512"), as the README words a plan."""
    import re

    dp, tp, ep, batch = re.fullmatch(r"dp(\d+) tp(\d+) pp1 ep(\d+) batch(\d+)", plan).groups()
    extra = [f"{name}{v}" for name, v in (("TP", tp), ("EP", ep)) if v != "1"]
    return f"DP{dp}" + (f" with {' and '.join(extra)}" if extra else ""), batch


@pytest.mark.slow  # ~2 min: the quick start's plan search on either GPU
def test_qwen3_235b_plan_prose_is_real(tmp_path, prose, capsys):
    """The quick start's second command: its candidate count, the best plan on either GPU (the one-replica
    objective the search ranks by, the capacity)."""
    both, _ = _qwen3_search(tmp_path, capsys, "h100-sxm,h200")
    best = both["plans"][0]
    words, batch = _plan_words(best["plan"])
    assert best["hardware"] == "h200"
    assert (f"searches {both['candidates']} plans of Qwen3-235B-A22B in FP8 on 8 GPUs of either kind") in prose
    assert (f"8 H200 as {words} and batches of {batch}, {best['capacity_req_s']:.0f} requests/s at "
            f"${best['one_replica_objective']:.3f} per million tokens") in prose


@pytest.mark.slow  # ~2 min: the same search on H100s alone (a test of its own, so the two run side by side)
def test_qwen3_235b_h100_plan_prose_is_real(tmp_path, prose, capsys):
    """The H100-only search's best with its whole-plan re-run and the spread of the published measurements
    printed beside it."""
    h100, near = _qwen3_search(tmp_path, capsys, "h100-sxm")
    alone = h100["plans"][0]
    assert (f"the best is {_plan_words(alone['plan'])[0]} at ${alone['one_replica_objective']:.3f} "
            f"(${alone['whole_plan_objective']:.3f} re-run on the whole plan)") in prose
    assert near and f"read {min(near):+.0f} to {max(near):+.0f} % on this model's H100 runs" in prose


def test_last_blocks_fit_advice_prose_is_real(prose):
    """The fine-tuning paragraph's long-sequence QLoRA: the memory `check` prints and the last-blocks advice."""
    from moesim import load_scenario
    from moesim.check import summary

    sets = ["workload.seq_len=32768", "model.max_seq_len=32768", "plan.recompute=none"]
    report = summary(load_scenario("mixtral-8x7b-qlora-1xa100", sets))
    assert not report["fits"]
    advice = "workload.trainable.layers: 6 (train only the last 6 of 32"
    assert advice in report["fits_advice"]
    assert f"--set plan.recompute=none`: {report['memory_per_device_gib']:.1f} GiB, \"{advice}" in prose
