#!/usr/bin/env bash
# One-shot check of moesim on a machine with a CUDA GPU, in under 8 minutes (issue 16):
#   1. tests   the `gpu`-marked tests                 python -m pytest -m gpu           (limit 90 s)
#   2. calib   calibrate and validate on the GPU      python -m moesim.cli calibrate --device cuda
#              --quick --validate --json                                                (limit 270 s)
#   3. kernel  the Triton grouped-GEMM expert FFN (kernels/triton_moe.py) against the reference
#              per-expert loop (kernels/moe_ref.py), whole MoE layer, bf16, on full-size expert
#              shapes: Mixtral 8x7B (d_model 4096, ffn 14336, 8 experts, top-2) and DeepSeek-V3
#              (d_model 7168, moe ffn 2048, 256 experts, top-8), 4096 tokens each: relative
#              error of the output and the time of both                                  (limit 90 s)
# then writes one JSON summary (device, versions, each step's status and seconds, the tests'
# counts, the calibration's validation summary and every point, the kernel comparison).
#
#   bash bench/gpu_check.sh [SUMMARY.json]        (default ./gpu_check.json, relative to where you run it)
#
# Exit status: 0 every step passed; 1 no CUDA GPU visible (one line on stderr, nothing run);
# 2 a step failed or ran past its limit (the summary says which; its log is kept next to it).
# Environment: PYTHON (default python) is the interpreter with moesim, torch and triton installed.
set -euo pipefail

PY="${PYTHON:-python}"
out="${1:-./gpu_check.json}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root: every path below is relative to it

TAG=gpu_check
# shellcheck source=bench/device_check_lib.sh
source bench/device_check_lib.sh
require_device "CUDA GPU" 'import sys
try:
    import torch
except Exception as exc:
    sys.exit(f"torch cannot be imported ({type(exc).__name__}: {exc})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)")'
new_workdir

run_step tests 90 "$work/tests.out" "$PY" -m pytest -m gpu -n 0 -q -p no:cacheprovider --junitxml="$work/tests.xml"
run_step calib 270 "$work/calib.json" "$PY" -m moesim.cli calibrate --device cuda --quick --validate --json \
  --force --out "$work/profile.yaml" --measurements "$work/measurements.csv"
run_step kernel 90 "$work/kernel.json" "$PY" - <<'PY'
"""Triton expert FFN vs the reference loop, whole MoE layer, full-size expert shapes, bf16."""
import json
import math

import torch
from moesim.kernels.moe_ref import MoEWeights, moe_forward
from moesim.kernels.timing import time_fn
from moesim.kernels.triton_moe import expert_ffn_triton

SHAPES = [("mixtral-8x7b", 4096, 14336, 8, 2), ("deepseek-v3", 7168, 2048, 256, 8)]
TOKENS, TOL = 4096, 2e-2
out = {"device": torch.cuda.get_device_name(0), "dtype": "bf16", "tokens": TOKENS, "tolerance": TOL, "shapes": []}
for name, d, f, experts, top_k in SHAPES:
    free, _ = torch.cuda.mem_get_info()
    per_expert = 3 * d * f * 2  # gate, up, down in bf16
    used = int(min(experts, max(top_k + 1, 0.5 * free // per_expert)))  # all of them where memory allows
    g = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, fan_in):
        return torch.randn(*shape, generator=g, device="cuda", dtype=torch.bfloat16).mul_(1 / math.sqrt(fan_in))

    w = MoEWeights(router=rand(d, used, fan_in=d), w_gate_up=rand(used, d, 2 * f, fan_in=d),
                   w_down=rand(used, f, d, fan_in=f))
    x = rand(TOKENS, d, fan_in=1)
    with torch.inference_mode():
        ref = moe_forward(x, w, top_k)
        tri = moe_forward(x, w, top_k, None, expert_ffn_triton)
        rel = float((tri.out.float() - ref.out.float()).norm() / ref.out.float().norm())
        finite = bool(torch.isfinite(tri.out).all())
        t_ref = time_fn(lambda: moe_forward(x, w, top_k), "cuda", 0.2).median_s
        t_tri = time_fn(lambda: moe_forward(x, w, top_k, None, expert_ffn_triton), "cuda", 0.2).median_s
    flops = 2.0 * 3 * d * f * sum(ref.dispatch.counts)
    out["shapes"].append({
        "name": name, "d_model": d, "ffn": f, "experts": experts, "experts_used": used, "top_k": top_k,
        "rel_error": rel, "max_abs_diff": float((tri.out.float() - ref.out.float()).abs().max()), "finite": finite,
        "ok": finite and rel < TOL, "reference_ms": t_ref * 1e3, "triton_ms": t_tri * 1e3,
        "reference_tflops": flops / t_ref / 1e12, "triton_tflops": flops / t_tri / 1e12})
    del w, x, ref, tri
    torch.cuda.empty_cache()
out["ok"] = all(s["ok"] for s in out["shapes"])
print(json.dumps(out, indent=1))
raise SystemExit(0 if out["ok"] else 3)
PY

write_summary "$("$PY" -c 'import json, torch; print(json.dumps({"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda}))')"
