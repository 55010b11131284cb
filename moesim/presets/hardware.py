"""Hardware presets: one device type in nodes of a cluster. Bandwidths are per direction.

Sources are the rows of shared/validation/dev_points.csv (HW-* datasheets, COST-* prices) named
in each comment. A preset has one node; a scenario sets ``cluster.nodes``.
"""

from __future__ import annotations

# DGX/HGX A100: NVLink3 600 GB/s bidirectional = 300 per direction (HW-04); 8x HDR 200 Gb/s IB,
# one per GPU = 25 GB/s (HW-04 note).
_DGX_A100_NODE = dict(devices_per_node=8, intra_bw_gbps=300.0, intra_latency_us=2.0)
_DGX_A100_NET = dict(nodes=1, nic_bw_gbps=25.0, nic_latency_us=5.0)
# DGX/HGX H100/H200: NVLink4 900 GB/s bidirectional = 450 per direction (HW-07); one ConnectX-7
# 400 Gb/s NDR NIC per GPU = 50 GB/s (HW-10).
_DGX_H100_NODE = dict(devices_per_node=8, intra_bw_gbps=450.0, intra_latency_us=2.0)
_DGX_H100_NET = dict(nodes=1, nic_bw_gbps=50.0, nic_latency_us=5.0)
# Apple silicon: one SoC, its GPU shares unified memory; the "node" link is never used.
_SOC_NODE = dict(devices_per_node=1, intra_bw_gbps=100.0, intra_latency_us=1.0)
_SOC_NET = dict(nodes=1, nic_bw_gbps=1.25, nic_latency_us=50.0)
# Quantized weights on Apple silicon run as llama.cpp's Q8_0 / Q4_0 (ggml/src/ggml-common.h):
# block_q8_0 = one fp16 scale + 32 int8 = 34 bytes per 32 weights (8.5 bits); block_q4_0 = one fp16
# scale + 32 nibbles = 18 bytes (4.5 bits). No fp8 format: fp8 weights keep 8 bits (per-tensor scale).
# The CUDA presets keep DeviceSpec's default, group-128 scales (AWQ/GPTQ/TensorRT-LLM: 8.125 / 4.125).
_GGML_WEIGHT_BITS = dict(int8=8.5, int4=4.5, fp8=8.0)

HARDWARE: dict[str, dict] = {
    # A100 SXM4 40GB: 312 TFLOP/s BF16/FP16 dense, TF32 156 (HW-01); 1555 GB/s, 40 GB (HW-02);
    # 400 W (HW-01); $1.49/h, low end of COST-02's A100 range.
    "a100-40gb": dict(
        name="DGX A100 40GB",
        device=dict(name="NVIDIA A100 SXM4 40GB", peak_tflops=dict(bf16=312.0, fp16=312.0, fp32=156.0),
                    mem_bw_gbps=1555.0, mem_gib=40.0, power_w=400.0, usd_per_hour=1.49),
        node=_DGX_A100_NODE, cluster=_DGX_A100_NET,
    ),
    # A100 SXM4 80GB: 312 TFLOP/s (HW-01); 2039 GB/s, 80 GB (HW-03); 400 W; $1.79/h (Lambda, COST-04 note).
    "a100-80gb": dict(
        name="DGX A100 80GB",
        device=dict(name="NVIDIA A100 SXM4 80GB", peak_tflops=dict(bf16=312.0, fp16=312.0, fp32=156.0),
                    mem_bw_gbps=2039.0, mem_gib=80.0, power_w=400.0, usd_per_hour=1.79),
        node=_DGX_A100_NODE, cluster=_DGX_A100_NET,
    ),
    # H100 SXM5 80GB: 989.4 BF16 / 1978.9 FP8 TFLOP/s dense, 700 W (HW-05); 3350 GB/s (HW-06);
    # $2.99/h (Lambda, COST-04 note; COST-03 range 2.49-3.99).
    "h100-sxm": dict(
        name="DGX H100",
        device=dict(name="NVIDIA H100 SXM5 80GB", peak_tflops=dict(bf16=989.4, fp16=989.4, fp8=1978.9, fp32=494.7),
                    mem_bw_gbps=3350.0, mem_gib=80.0, power_w=700.0, usd_per_hour=2.99),
        node=_DGX_H100_NODE, cluster=_DGX_H100_NET,
    ),
    # H200 SXM 141GB: H100's tensor FLOP/s, 4800 GB/s, 141 GB (HW-08): nvidia-smi reports 143,771 MiB
    # = 140.4 GiB; 700 W; $3.29/h (COST-04).
    "h200": dict(
        name="HGX H200",
        device=dict(name="NVIDIA H200 SXM 141GB", peak_tflops=dict(bf16=989.4, fp16=989.4, fp8=1978.9, fp32=494.7),
                    mem_bw_gbps=4800.0, mem_gib=140.0, power_w=700.0, usd_per_hour=3.29),
        node=_DGX_H100_NODE, cluster=_DGX_H100_NET,
    ),
    # Apple M2 (10-core GPU): 100 GB/s, up to 24 GB (HW-11); GPU ~3.6 TFLOP/s FP32 derived (HW-11);
    # FP16 runs at the FP32 rate on this GPU. ~20 W. Price: a $1,200 machine over 3 years ~ $0.05/h (assumption).
    "m2": dict(
        name="Apple M2",
        device=dict(name="Apple M2", peak_tflops=dict(fp32=3.6, fp16=3.6, bf16=3.6),
                    mem_bw_gbps=100.0, mem_gib=24.0, power_w=20.0, usd_per_hour=0.05,
                    compute_efficiency=0.6, launch_overhead_us=10.0, weight_bits=_GGML_WEIGHT_BITS),
        node=_SOC_NODE | dict(intra_bw_gbps=100.0), cluster=_SOC_NET,
    ),
    # Apple M2 Max (38-core GPU): 400 GB/s, up to 96 GB (HW-12); ~13.6 TFLOP/s FP32 derived (HW-12);
    # ~60 W; a $3,500 machine over 3 years ~ $0.13/h (assumption).
    "m2-max": dict(
        name="Apple M2 Max",
        device=dict(name="Apple M2 Max", peak_tflops=dict(fp32=13.6, fp16=13.6, bf16=13.6),
                    mem_bw_gbps=400.0, mem_gib=96.0, power_w=60.0, usd_per_hour=0.13,
                    compute_efficiency=0.6, launch_overhead_us=10.0, weight_bits=_GGML_WEIGHT_BITS),
        node=_SOC_NODE | dict(intra_bw_gbps=400.0), cluster=_SOC_NET,
    ),
    # Apple M2 Ultra (76-core GPU): 800 GB/s, up to 192 GB (HW-13); 27.2 TFLOP/s FP32 (HW-13);
    # ~150 W under GPU load; a $6,600 machine over 3 years ~ $0.25/h (assumption).
    "m2-ultra": dict(
        name="Apple M2 Ultra",
        device=dict(name="Apple M2 Ultra", peak_tflops=dict(fp32=27.2, fp16=27.2, bf16=27.2),
                    mem_bw_gbps=800.0, mem_gib=192.0, power_w=150.0, usd_per_hour=0.25,
                    compute_efficiency=0.6, launch_overhead_us=10.0, weight_bits=_GGML_WEIGHT_BITS),
        node=_SOC_NODE | dict(intra_bw_gbps=800.0), cluster=_SOC_NET,
    ),
}
