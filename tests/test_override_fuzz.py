"""Random combinations of overrides on the shipped scenarios: each either simulates or stops with a
moesim error (the one line the CLI prints), never another exception or a numpy warning.

Seeded, so the same cases run every time; the three bugs this kind of search found (fit advice doubling
plan.pp under the interleaved schedule, a vocabulary smaller than tp, a dense draft beside EPLB replicas)
each have their own test too. The values are the ones users pick; the combinations are what no test lists.
"""

from __future__ import annotations

import random
import warnings

import pytest

from moesim import MoesimError, load_scenario, simulate
from moesim.shipped import shipped_scenarios

TRAINING = {
    "plan.tp": [1, 2, 4, 8], "plan.pp": [1, 2, 4], "plan.ep": [1, 2, 4, 8], "plan.dp": [1, 2, 8, 16],
    "plan.microbatches": [1, 2, 4, 8], "plan.zero_stage": [0, 1, 2, 3], "plan.recompute": ["none", "selective", "full"],
    "plan.schedule": ["gpipe", "1f1b", "interleaved", "zb-h1", "dualpipe"], "plan.virtual_stages": [1, 2],
    "plan.cp": [1, 2], "plan.alltoall": ["flat", "hierarchical", "deepep_normal", "allgather"],
    "routing.capacity_factor": [0.5, 1.25, 2.0], "routing.overflow": ["drop", "dropless"],
    "routing.distribution": ["uniform", "zipf"], "model.dtype": ["bf16", "fp8"], "workload.seq_len": [512, 4096],
    "hardware.preset": ["a100-80gb", "h100-sxm", "b200", "gb200-nvl72", "m2-ultra", "tpu-v3"],
    "placement.redundant_experts": [0, 8],
}
SERVING = {
    "plan.tp": [1, 2, 8], "plan.ep": [1, 2, 8], "plan.dp": [1, 2], "plan.dp_attention": ["true", "false"],
    "plan.alltoall": ["flat", "deepep_low_latency", "allgather"], "workload.max_batch_seqs": [1, 64],
    "workload.max_batch_tokens": [256, 8192], "workload.chunked_prefill": ["true", "false"],
    "workload.engine": ["vllm", "trtllm"], "workload.prompt_tokens.value": [1, 3000],
    "workload.output_tokens.value": [1, 200], "workload.kv_cache_dtype": ["bf16", "fp8"],
    "model.dtype": ["bf16", "fp8", "nvfp4", "mxfp4"], "model.vocab_size": [3, 32001],
    "hardware.preset": ["a100-80gb", "h200", "b200", "l40s", "m2-ultra", "dgx-spark"],
    "placement.redundant_experts": [0, 2],
}
CASES = 36


def _cases() -> list[tuple[str, list[str]]]:
    rng = random.Random(20261205)
    scenarios = shipped_scenarios()
    names = [sc.name for sc in scenarios]
    training_names = {sc.name for sc in scenarios if sc.kind == "training"}
    out = []
    for _ in range(CASES):
        name = rng.choice(names)
        training = name in training_names
        space = TRAINING if training else SERVING
        overrides = [f"{k}={rng.choice(space[k])}" for k in rng.sample(sorted(space), rng.randint(2, 4))]
        if not training:
            overrides.append("workload.arrival.n_requests=8")
        out.append((name, overrides))
    return out


@pytest.mark.parametrize(("name", "overrides"), _cases(), ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_overrides_simulate_or_stop_with_a_moesim_error(name, overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            s = load_scenario(name, overrides)
            result = simulate(s, seed=0)
        except MoesimError as exc:
            message = str(exc).strip()
            assert message and "\n" not in message, message
            return
    assert result.summary  # a run that loads and simulates returns its summary
