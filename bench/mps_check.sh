#!/usr/bin/env bash
# One-shot check of moesim on a Mac with Apple MPS, in under 8 minutes (issue 16); the MPS twin of
# bench/gpu_check.sh:
#   1. tests   the `mps`-marked tests                 python -m pytest -m mps           (limit 90 s)
#   2. calib   calibrate and validate on MPS          python -m moesim.cli calibrate --device mps
#              --quick --validate --json                                                (limit 270 s)
#   3. kernel  the reference MoE layer (kernels/moe_ref.py) on MPS in fp16 against the same layer on
#              the CPU in fp32 (Triton does not run on MPS), on full-size expert shapes: Mixtral 8x7B
#              (d_model 4096, ffn 14336, 8 experts, top-2) and DeepSeek-V3 (d_model 7168, moe ffn
#              2048, top-8; as many of its 256 experts as a third of the recommended MPS memory
#              holds, the summary says how many), 1024 tokens each: relative error, MPS time (limit 90 s)
# then writes one JSON summary (device, versions, each step's status and seconds, the tests'
# counts, the calibration's validation summary and every point, the kernel comparison).
#
#   bash bench/mps_check.sh [SUMMARY.json]        (default ./mps_check.json, relative to where you run it)
#
# Exit status: 0 every step passed; 1 no Apple MPS device visible (one line on stderr, nothing run);
# 2 a step failed or ran past its limit (the summary says which; its log is kept next to it).
# Environment: PYTHON (default python) is the interpreter with moesim and torch installed.
set -euo pipefail

PY="${PYTHON:-python}"
out="${1:-./mps_check.json}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."  # the repository root: every path below is relative to it

TAG=mps_check
# shellcheck source=bench/device_check_lib.sh
source bench/device_check_lib.sh
require_device "Apple MPS device" 'import sys
try:
    import torch
except Exception as exc:
    sys.exit(f"torch cannot be imported ({type(exc).__name__}: {exc})")
mps = getattr(torch.backends, "mps", None)
if mps is None or not mps.is_available():
    sys.exit(f"torch {torch.__version__} sees no MPS device (torch.backends.mps.is_available() is False)")'
new_workdir

run_step tests 90 "$work/tests.out" "$PY" -m pytest -m mps -n 0 -q -p no:cacheprovider --junitxml="$work/tests.xml"
run_step calib 270 "$work/calib.json" "$PY" -m moesim.cli calibrate --device mps --quick --validate --json \
  --force --out "$work/profile.yaml" --measurements "$work/measurements.csv"
run_step kernel 90 "$work/kernel.json" "$PY" - <<'PY'
"""The reference MoE layer on MPS (fp16) vs on the CPU (fp32), full-size expert shapes."""
import json
import math
import os

import torch
from moesim.kernels.moe_ref import MoEWeights, moe_forward
from moesim.kernels.timing import time_fn

SHAPES = [("mixtral-8x7b", 4096, 14336, 8, 2), ("deepseek-v3", 7168, 2048, 256, 8)]
TOKENS, TOL = 1024, 3e-2
try:
    budget = torch.mps.recommended_max_memory() / 3
except (AttributeError, RuntimeError):
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 6
out = {"device": "mps", "dtype": "fp16", "reference": "cpu fp32", "tokens": TOKENS, "tolerance": TOL, "shapes": []}
for name, d, f, experts, top_k in SHAPES:
    per_expert = 3 * d * f * (2 + 4)  # fp16 on MPS + the fp32 reference on the CPU (unified memory)
    used = int(min(experts, max(top_k + 1, budget // per_expert)))
    g = torch.Generator().manual_seed(0)

    def rand(*shape, fan_in):
        return torch.randn(*shape, generator=g).mul_(1 / math.sqrt(fan_in))

    cpu = MoEWeights(router=rand(d, used, fan_in=d), w_gate_up=rand(used, d, 2 * f, fan_in=d),
                     w_down=rand(used, f, d, fan_in=f))
    mps = MoEWeights(*(t.to("mps", torch.float16) for t in (cpu.router, cpu.w_gate_up, cpu.w_down)))
    x = rand(TOKENS, d, fan_in=1)
    xm = x.to("mps", torch.float16)
    with torch.inference_mode():
        ref = moe_forward(x, cpu, top_k).out
        got = moe_forward(xm, mps, top_k)
        diff = got.out.float().cpu() - ref
        rel = float(diff.norm() / ref.norm())
        finite = bool(torch.isfinite(got.out).all())
        t_mps = time_fn(lambda: moe_forward(xm, mps, top_k), "mps", 0.2).median_s
    flops = 2.0 * 3 * d * f * sum(got.dispatch.counts)
    out["shapes"].append({
        "name": name, "d_model": d, "ffn": f, "experts": experts, "experts_used": used, "top_k": top_k,
        "rel_error": rel, "max_abs_diff": float(diff.abs().max()), "finite": finite, "ok": finite and rel < TOL,
        "mps_ms": t_mps * 1e3, "mps_tflops": flops / t_mps / 1e12})
    del cpu, mps, x, xm, ref, got, diff
    torch.mps.empty_cache()
out["ok"] = all(s["ok"] for s in out["shapes"])
print(json.dumps(out, indent=1))
raise SystemExit(0 if out["ok"] else 3)
PY

write_summary "$("$PY" -c '
import json, subprocess
try:
    chip = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                          timeout=5, check=False).stdout.strip() or "mps"
except (OSError, subprocess.SubprocessError):
    chip = "mps"
print(json.dumps({"device": chip}))')"
