"""Hardware presets: one device type in nodes of a cluster. Bandwidths are per direction.

Sources are the rows of shared/validation/dev_points.csv (HW-* datasheets, COST-* prices) named
in each comment. A preset has one node; a scenario sets ``cluster.nodes``.

Each device names its default cost model (``default_profile``): a calibration profile shipped in
``moesim/data/profiles`` (rebased on the device's own peaks and bandwidth), or "datasheet" for the
datasheet roofline with the device's efficiency constants. A new device is one entry here.
"""

from __future__ import annotations

from moesim.costmodel.attention_rate import GB300_ATTENTION_RATE_SCALE
from moesim.costmodel.hbm import B200_HBM_GBPS, GB200_HBM_GBPS
from moesim.costmodel.sustained import (
    B200_SUSTAINED_COMPUTE_FRACTION,
    B300_SUSTAINED_FP4_FRACTION,
    GB200_SUSTAINED_COMPUTE_FRACTION,
    GB300_SUSTAINED_FP4_FRACTION,
)
from moesim.costmodel.weight_only import AMPERE_W4A16_PEAK_FRACTION, HOPPER_W4A16_PEAK_FRACTION
from moesim.presets import apple_metal, gb10_llamacpp

# DGX/HGX A100: NVLink3 600 GB/s bidirectional = 300 per direction (HW-04); 8x HDR 200 Gb/s IB,
# one per GPU = 25 GB/s (HW-04 note).
# SM counts (sm_count): A100 SXM4 108 (NVIDIA A100 Tensor Core GPU Architecture whitepaper, 2020);
# H100 SXM5 132 (NVIDIA H100 Tensor Core GPU Architecture whitepaper, 2022), the same GH100 part in
# H800 and H200; B200 148 (NVIDIA Blackwell architecture technical brief: 2 dies x 74 SMs).
_DGX_A100_NODE = dict(devices_per_node=8, intra_bw_gbps=300.0, intra_latency_us=2.0)
_DGX_A100_NET = dict(nodes=1, nic_bw_gbps=25.0, nic_latency_us=5.0)
#: Dense tensor TFLOP/s of the GH100 die that the H100 SXM5, H200 and H800 share (HW-05).
_GH100_TFLOPS = dict(bf16=989.4, fp16=989.4, fp8=1978.9, fp32=494.7)
# Hopper's 4-bit weight-only GEMMs (int4/MXFP4/NVFP4 x BF16) are bound by their in-loop conversion at
# 25.7 % of the BF16 peak (SGLang PR #38884's H100 measurement; moesim/costmodel/weight_only.py).
_GH100_WEIGHT_ONLY = dict(weight_only_peak_fraction=HOPPER_W4A16_PEAK_FRACTION)
# DGX/HGX H100/H200: NVLink4 900 GB/s bidirectional = 450 per direction (HW-07); one ConnectX-7
# 400 Gb/s NDR NIC per GPU = 50 GB/s (HW-10).
_DGX_H100_NODE = dict(devices_per_node=8, intra_bw_gbps=450.0, intra_latency_us=2.0)
_DGX_H100_NET = dict(nodes=1, nic_bw_gbps=50.0, nic_latency_us=5.0)
# HGX H800: the export H100 with NVLink cut to 400 GB/s bidirectional = 200 per direction (NVIDIA
# H800 SXM5 datasheet); the DeepSeek-V3 report (arXiv:2412.19437, sec. 3.2.2) measures ~160 GB/s
# achievable NVLink against ~50 GB/s IB (HW-09), with 8 x 400 Gb/s InfiniBand (one CX7 per GPU) per node.
_HGX_H800_NODE = dict(devices_per_node=8, intra_bw_gbps=200.0, intra_latency_us=2.0)
# Blackwell (B200 / GB200): NVIDIA quotes tensor peaks with 2:4 sparsity; dense is half. HGX/DGX B200
# page (8 GPUs): FP4 144 PF sparse / 72 dense, FP8 72 PF, BF16 36 PF, TF32 18 PF (sparse), 1,440 GB
# HBM3e at 64 TB/s, 14.4 TB/s NVLink, 8 x ConnectX-7 400 Gb/s ("networking bandwidth 0.8 TB/s" =
# 8 x 400 Gb/s, both directions). Per GPU, dense: BF16 2250, FP8 4500, FP4 9000, TF32 1125 TFLOP/s;
# the same per-GPU table at 1,000 W is in NVIDIA's Blackwell technical brief (glennklockwood.com/
# garden/processors/B200). FP4 is the dense NVFP4 peak (model.dtype nvfp4 runs its GEMMs there).
_B200_TFLOPS = dict(bf16=2250.0, fp16=2250.0, fp8=4500.0, fp4=9000.0, fp32=1125.0)
# GB200 NVL72 page (72 GPUs, each B200 at 1,200 W): FP4 1,440 PF, FP8 720 PF, BF16 360 PF, TF32 180 PF
# (sparse), up to 13.4 TB HBM3e at 576 TB/s, 130 TB/s NVLink. Per GPU, dense: BF16 2500, FP8 5000,
# FP4 10000, TF32 1250 TFLOP/s (the technical brief's GB200 column: same numbers).
_GB200_TFLOPS = dict(bf16=2500.0, fp16=2500.0, fp8=5000.0, fp4=10000.0, fp32=1250.0)
# NVLink 5: 1.8 TB/s bidirectional per GPU = 900 GB/s per direction (18 links x 50 GB/s), HGX B200 and
# NVL72 alike; one NVSwitch hop between any two GPUs of the domain, so the H100's 2 us is kept.
# HGX B200: 8 GPUs per NVLink domain, one ConnectX-7 400 Gb/s NIC per GPU = 50 GB/s (above).
_HGX_B200_NODE = dict(devices_per_node=8, intra_bw_gbps=900.0, intra_latency_us=2.0)
# GB200 NVL72: one rack is one NVLink domain of 72 GPUs (18 compute trays x 4 GPUs, 9 NVLink switch
# trays), modelled as one node of 72 devices. Racks join over the scale-out fabric: each compute tray
# has 4 ConnectX-7 (NVIDIA multi-node NVLink tuning guide, docs.nvidia.com/multi-node-nvlink-systems:
# "Grace CPU, Blackwell GPU, CX7 ..."), one 400 Gb/s NIC per GPU = 50 GB/s, as the HGX B200's rails.
# Each compute tray's 4 GPUs are driven by 2 Grace CPUs (the GB200 NVL72 page: "36 Grace CPUs, 72 Blackwell GPUs").
_NVL72_NODE = dict(devices_per_node=72, intra_bw_gbps=900.0, intra_latency_us=2.0, host_cpu="grace")
_CX7_NET = dict(nodes=1, nic_bw_gbps=50.0, nic_latency_us=5.0)
# GB300 NVL72 (Blackwell Ultra): NVIDIA's GB300 NVL72 page (glennklockwood.com/garden/processors/B300 quotes it):
# 1.1 EF dense FP4 and 360 PF FP8 over 72 GPUs, 20 TB HBM3e at 576 TB/s, 72 ConnectX-8 NICs, the GB200's
# NVLink 5 domain of 72. Per GPU, dense: FP4 15000 ("15 PetaFLOPS dense NVFP4", NVIDIA's "Inside NVIDIA
# Blackwell Ultra" blog), FP8 5000, BF16 2500 and TF32 1250 as the GB200 (Verda's per-GPU table of GB300/GB200/
# B300/B200, verda.com/blog/gb300-nvl72-architecture); its softmax units run 10.7 tera-exponentials/s against 5.
_GB300_TFLOPS = dict(bf16=2500.0, fp16=2500.0, fp8=5000.0, fp4=15000.0, fp32=1250.0)
# ConnectX-8 SuperNIC: 800 Gb/s per GPU = 100 GB/s per direction.
_CX8_NET = dict(nodes=1, nic_bw_gbps=100.0, nic_latency_us=5.0)
# HGX/DGX B300 (Blackwell Ultra, 8 GPUs at 1,100 W each): per GPU, dense: BF16 2250, FP8 4500, TF32 1125 (the HGX B200's),
# FP4 14000 (Verda's per-GPU table above: "FP4 14 PFLOPS, FP8 4.5, FP16/BF16 2.25 ... 270 GB HBM3E ... 1.1 kW"); the
# same 10.7 tera-exponentials/s softmax units as the GB300; HBM as the B200's (costmodel/hbm.py).
_B300_TFLOPS = dict(bf16=2250.0, fp16=2250.0, fp8=4500.0, fp4=14000.0, fp32=1125.0)
# Apple silicon: one SoC, its GPU shares unified memory; the "node" link is never used.
_SOC_NODE = dict(devices_per_node=1, intra_bw_gbps=100.0, intra_latency_us=1.0)
_SOC_NET = dict(nodes=1, nic_bw_gbps=1.25, nic_latency_us=50.0)
# Quantized weights on Apple silicon run as llama.cpp's Q8_0 / Q4_0 (ggml/src/ggml-common.h):
# block_q8_0 = one fp16 scale + 32 int8 = 34 bytes per 32 weights (8.5 bits); block_q4_0 = one fp16
# scale + 32 nibbles = 18 bytes (4.5 bits). No fp8 format: fp8 weights keep 8 bits (per-tensor scale).
# The CUDA presets keep DeviceSpec's default, group-128 scales (AWQ/GPTQ/TensorRT-LLM: 8.125 / 4.125).
_GGML_WEIGHT_BITS = dict(int8=8.5, int4=4.5, fp8=8.0)
# llama.cpp's Metal backend on M2 GPUs: the bandwidth its mat-vecs stream at and its cost per op-graph
# kernel (about three Metal dispatches each), fitted on llama-bench rows outside `moesim validate`
# (presets/apple_metal.py).
_METAL = dict(memory_efficiency=apple_metal.MEMORY_EFFICIENCY, launch_overhead_us=apple_metal.LAUNCH_OVERHEAD_US,
              expert_tile_tokens=apple_metal.EXPERT_TILE_TOKENS, expert_matvec_tokens=apple_metal.EXPERT_MATVEC_TOKENS)

# Ampere's only tensor-core MMA is mma.sync m16n8k16 (bf16/fp16), so a grouped expert kernel pads each
# expert's rows to 16, not to Hopper's 64-row WGMMA warpgroup; Triton fused-MoE (SGLang and vLLM) takes
# 16-row blocks when the batch is at most the expert count (sgl-project/sglang
# python/sglang/srt/layers/moe/fused_moe_triton/fused_moe_triton_config.py @c050f40d, get_default_config).
_AMPERE_MMA_ROWS = 16

#: Share of a PCIe link's per-direction rate that NCCL's ring all-reduce reaches over 4 and over 8 GPUs of a
#: two-socket PCIe server: 35 and 28 GB/s of bus bandwidth on eight RTX 5090s behind two Xeon 8480+ (PCIe 5.0, 63 GB/s a
#: direction; NVIDIA/nccl issue #1639, 1-8 GB messages; the maintainer: "on PCI systems, the performance you get is
#: usually determined by the bandwidth your CPU and memory can deliver"). A ring over such a server crosses its
#: switches and root complexes, and between the sockets NCCL leaves peer-to-peer for host memory, data-centre GPUs
#: included (NCCL's environment-variable docs, NCCL_P2P_LEVEL: P2P by default up to a PCI root complex; SYS, across the
#: sockets' interconnect, only when asked for); so the share, not the 5090's rate, is what carries to another PCIe
#: server. An assumption where nothing of the server itself was measured.
PCIE_RING_SHARE: dict[int, float] = {4: 35.0 / 63.0, 8: 28.0 / 63.0}


def pcie_rings(link_gbps: float) -> dict[int, float]:
    """``node.ring_busbw_gbps`` of a PCIe server whose links run at ``link_gbps`` a direction: the
    :data:`PCIE_RING_SHARE` of it, GB/s, to one decimal."""
    return {n: round(link_gbps * share, 1) for n, share in PCIE_RING_SHARE.items()}


# Compute-bound 4-bit weight-only GEMMs top out at Marlin's 141.4 TFLOP/s on an A100, 0.453 of its 16-bit peak
# (vLLM PR #2497; costmodel/weight_only.py).
_A100_WEIGHT_ONLY = dict(weight_only_peak_fraction=AMPERE_W4A16_PEAK_FRACTION)

HARDWARE: dict[str, dict] = {
    # A100 SXM4 40GB: 312 TFLOP/s BF16/FP16 dense, TF32 156 (HW-01); 1555 GB/s, 40 GB (HW-02);
    # 400 W (HW-01); $1.49/h, low end of COST-02's A100 range.
    "a100-40gb": dict(
        name="DGX A100 40GB",
        device=dict(name="NVIDIA A100 SXM4 40GB", sm_count=108, peak_tflops=dict(bf16=312.0, fp16=312.0, fp32=156.0),
                    mem_bw_gbps=1555.0, mem_gib=40.0, power_w=400.0, usd_per_hour=1.49,
                    mma_rows=_AMPERE_MMA_ROWS, default_profile="a100.yaml", **_A100_WEIGHT_ONLY),
        node=_DGX_A100_NODE, cluster=_DGX_A100_NET,
    ),
    # A100 SXM4 80GB: 312 TFLOP/s (HW-01); 2039 GB/s, 80 GB (HW-03); 400 W; $1.79/h (Lambda, COST-04 note).
    "a100-80gb": dict(
        name="DGX A100 80GB",
        device=dict(name="NVIDIA A100 SXM4 80GB", sm_count=108, peak_tflops=dict(bf16=312.0, fp16=312.0, fp32=156.0),
                    mem_bw_gbps=2039.0, mem_gib=80.0, power_w=400.0, usd_per_hour=1.79,
                    mma_rows=_AMPERE_MMA_ROWS, default_profile="a100.yaml", **_A100_WEIGHT_ONLY),
        node=_DGX_A100_NODE, cluster=_DGX_A100_NET,
    ),
    # H100 SXM5 80GB: 989.4 BF16 / 1978.9 FP8 TFLOP/s dense, 700 W (HW-05); 3350 GB/s (HW-06);
    # $2.99/h (Lambda, COST-04 note; COST-03 range 2.49-3.99).
    "h100-sxm": dict(
        name="DGX H100",
        device=dict(name="NVIDIA H100 SXM5 80GB", sm_count=132, peak_tflops=dict(_GH100_TFLOPS), **_GH100_WEIGHT_ONLY,
                    mem_bw_gbps=3350.0, mem_gib=80.0, power_w=700.0, usd_per_hour=2.99,
                    default_profile="h100.yaml"),
        node=_DGX_H100_NODE, cluster=_DGX_H100_NET,
    ),
    # H200 SXM 141GB: H100's tensor FLOP/s, 4800 GB/s, 141 GB (HW-08): nvidia-smi reports 143,771 MiB
    # = 140.4 GiB; 700 W; $3.29/h (COST-04). Cost model: H200 is the H100's GH100 die with HBM3e, so it
    # borrows the H100's measured efficiencies rebased on its own bandwidth (no H200 kernel measurements).
    "h200": dict(
        name="HGX H200",
        device=dict(name="NVIDIA H200 SXM 141GB", sm_count=132, peak_tflops=dict(_GH100_TFLOPS), **_GH100_WEIGHT_ONLY,
                    mem_bw_gbps=4800.0, mem_gib=140.0, power_w=700.0, usd_per_hour=3.29,
                    default_profile="h100.yaml"),
        node=_DGX_H100_NODE, cluster=_DGX_H100_NET,
    ),
    # GH200 Grace Hopper Superchip, the 480GB model (96 GB HBM3 on the GPU, 480 GB LPDDR5X on the CPU): the GH100 die's
    # tensor FLOP/s (the H100 SXM's, HW-05) and 96 GB of HBM3 at 4.0 TB/s (NVIDIA GH200 Grace Hopper Superchip datasheet;
    # the 144 GB HBM3e model runs 4.9 TB/s). One GPU per node, its Grace CPU on NVLink-C2C: the host is Grace. Power:
    # the module is configurable from 450 to 1,000 W for CPU, GPU and memory together; the GPU's share is taken as the
    # H100 SXM's 700 W (assumption). $1.49/h: assumption, Lambda's on-demand GH200 price (2025); volatile. Cost model:
    # the H100's, rebased on the faster HBM (the same die).
    "gh200": dict(
        name="GH200 480GB",
        device=dict(name="NVIDIA GH200 480GB", sm_count=132, peak_tflops=dict(_GH100_TFLOPS), **_GH100_WEIGHT_ONLY,
                    mem_bw_gbps=4000.0, mem_gib=96.0, power_w=700.0, usd_per_hour=1.49,
                    default_profile="h100.yaml"),
        node=dict(devices_per_node=1, intra_bw_gbps=450.0, intra_latency_us=2.0, host_cpu="grace"), cluster=_CX7_NET,
    ),
    # H800 SXM5 80GB: the H100 SXM5's tensor FLOP/s (989.4 BF16 / 1978.9 FP8 dense), 3350 GB/s HBM3,
    # 80 GB, 700 W (NVIDIA H800 datasheet; HW-05/HW-06); NVLink 200 GB/s per direction (above).
    # $2/h: the H800 rental price the DeepSeek-V3 report assumes (Table 1). Cost model: same GH100
    # die as the H100, so it uses the H100's measured efficiencies (as the H200 does).
    "h800": dict(
        name="HGX H800",
        device=dict(name="NVIDIA H800 SXM5 80GB", sm_count=132, peak_tflops=dict(_GH100_TFLOPS), **_GH100_WEIGHT_ONLY,
                    mem_bw_gbps=3350.0, mem_gib=80.0, power_w=700.0, usd_per_hour=2.0,
                    default_profile="h100.yaml"),
        node=_HGX_H800_NODE, cluster=_DGX_H100_NET,
    ),
    # B200 in an HGX/DGX B200 (1,000 W): dense tensor TFLOP/s above; HBM3e 180 GB at 7.67 TB/s per GPU
    # (costmodel/hbm.B200_HBM_GBPS; 1,440 GB over 8 GPUs); nvidia-smi reports 183,359 MiB = 179.1 GiB. Cost model: the
    # H100's measured efficiencies rebased on the B200's peaks and bandwidth (each kernel keeps its
    # measured fraction of the roofline), GEMMs scaled by the B200's measured fraction over the H100's
    # at the same FLOPs (profile_gemm_ratio: XLA's BF16 GEMM tables of both devices, 0.45 for small
    # GEMMs to 0.80 for the largest; costmodel/sibling_gemm.py). Held out: dense BF16 GEMMs of
    # 4096^3-8192^3 reach 63-65 % of the 2,250 dense peak on a B200 (pytorch/ao PR #2427,
    # benchmarks/float8/bench_matmul.py); this model gives 56-60 % (tests/test_sibling_gemm.py), the
    # plain rebase 70-74 %. Held out too: MXFP8 grouped GEMMs of 8 experts x 16K tokens at DeepSeek-V3
    # shapes take 1671 / 1683 us forward / input gradient on a B200 (pytorch/ao torchao/prototype/
    # moe_training/README.md, PR #3566), this model 1519 / 1526 us (-9 %); their K-grouped weight
    # gradient takes 2103 us, priced as the forward. The H100's NCCL fits scale to NVLink 5 (CollectivesSpec.link_gbps).
    # Under sustained load at its 1,000 W limit a B200 holds its SM clock near 1,580 of 1,965 MHz and compute-bound
    # kernels keep 0.853 of their benchmarked speed (FlashInfer PR #2899; costmodel/sustained.py).
    # FP8 training's backward GEMMs run at the forward's speed: Blackwell accumulates FP8 in FP32 and has no
    # split-accumulation mode (fp8_split_accumulation false on every Blackwell preset; costmodel/fp8.py), and its FP8
    # GEMMs take any operand layout, so tensor-scaled casts write no transposes (fp8_non_tn_gemm; TE's
    # is_non_tn_fp8_gemm_supported).
    # Weights: CUDA group-128 defaults. $5.00/h: assumption, the middle of the $4.50-6.00 on-demand range
    # a March 2026 survey quotes for specialised clouds (lyceum.technology "NVIDIA B200 GPU Cloud
    # Pricing 2026"; spot from $2.25, hyperscalers $8-14); volatile.
    "b200": dict(
        name="HGX B200",
        device=dict(name="NVIDIA B200 SXM 180GB", sm_count=148, peak_tflops=dict(_B200_TFLOPS),
                    mem_bw_gbps=B200_HBM_GBPS, mem_gib=179.0, power_w=1000.0, usd_per_hour=5.00,
                    sustained_compute_fraction=B200_SUSTAINED_COMPUTE_FRACTION,
                    fp8_split_accumulation=False, fp8_non_tn_gemm=True,
                    default_profile="h100.yaml", profile_gemm_ratio="b200-vs-h100"),
        node=_HGX_B200_NODE, cluster=_CX7_NET,
    ),
    # B200 in a GB200 NVL72 rack (1,200 W per GPU, the technical brief's GB200 column): dense tensor
    # TFLOP/s above; HBM3e 186 GB at 7.93 TB/s per GPU (costmodel/hbm.GB200_HBM_GBPS; 13.4 TB over 72; MLPerf's system name
    # "GB200-NVL72_GB200-186GB"); nvidia-smi reports 189,471 MiB = 185.0 GiB. One node = one rack of 72;
    # set cluster.nodes for several racks. Cost model: the H100's, rebased with the B200's GEMM ratio (as
    # b200) times the GB200's measured best-GEMM fraction of its higher peak over the B200's (0.94: 1,822 of 2,500
    # against 1,745 of 2,250 BF16 TFLOP/s, moesim/data/mamf.csv; costmodel/sibling_gemm.py). $10.50/h:
    # assumption, $42.00/h on demand listed for GB200 NVL72 (gpu.blog/gpus/nvidia-gb200-nvl72) read as
    # CoreWeave's gb200-4x instance of one 4-GPU compute tray (docs.coreweave.com, GB200 instances); volatile.
    # Under sustained load it keeps the B200's 0.853 of its compute rate: dense training runs 1.01-1.05x a B200's with
    # the same software and plan (MLPerf Training v5.0 Llama 2 70B LoRA; Megatron-Bridge 25.11 Llama 3 8B;
    # costmodel/sustained.py).
    "gb200-nvl72": dict(
        name="GB200 NVL72",
        device=dict(name="NVIDIA GB200 186GB", sm_count=148, peak_tflops=dict(_GB200_TFLOPS),
                    mem_bw_gbps=GB200_HBM_GBPS, mem_gib=185.0, power_w=1200.0, usd_per_hour=10.50,
                    sustained_compute_fraction=GB200_SUSTAINED_COMPUTE_FRACTION,
                    fp8_split_accumulation=False, fp8_non_tn_gemm=True,
                    default_profile="h100.yaml", profile_gemm_ratio="gb200-vs-h100"),
        node=_NVL72_NODE, cluster=_CX7_NET,
    ),
    # Blackwell Ultra in a GB300 NVL72 rack (1,400 W per GPU): dense tensor TFLOP/s above; HBM3e 20 TB / 72 =
    # 278 GB = 259 GiB per GPU (288 GB nominal) at the GB200's 7.93 TB/s (costmodel/hbm.py). SMs: NVIDIA's blog gives 160 for the full die; the
    # GB200's 148 enabled are assumed. Cost model: the GB200's (the H100 profile rebased with the GB200's GEMM
    # ratio: the same tensor peaks; no GB300 GEMM measurement), attention 1.125x faster at the same peak (Blackwell Ultra's doubled
    # exponentials; cuDNN's SDPA on a GB300 over a GB200, costmodel/attention_rate.py). $12.60/h: assumption,
    # the GB200's $10.50 plus the 20 % per-GPU TCO premium InferenceX quotes for GB300 over GB200
    # (inferencex.semianalysis.com blog, DeepSeek-V4 GB300 vs GB200, 2026); volatile. Under sustained FP4 load its power
    # limit binds: 0.664 of the FP4 peak, the GB200's sustained FP4 rate x 1,400 / 1,200 W (costmodel/sustained.py).
    "gb300-nvl72": dict(
        name="GB300 NVL72",
        device=dict(name="NVIDIA GB300 288GB", sm_count=148, peak_tflops=dict(_GB300_TFLOPS),
                    mem_bw_gbps=GB200_HBM_GBPS, mem_gib=259.0, power_w=1400.0, usd_per_hour=12.60,
                    attention_rate_scale=GB300_ATTENTION_RATE_SCALE, sustained_fp4_fraction=GB300_SUSTAINED_FP4_FRACTION,
                    fp8_split_accumulation=False, fp8_non_tn_gemm=True,
                    default_profile="h100.yaml", profile_gemm_ratio="gb200-vs-h100"),
        node=_NVL72_NODE, cluster=_CX8_NET,
    ),
    # B300 in an HGX/DGX B300 (Blackwell Ultra, 1,100 W): dense tensor TFLOP/s above; 270 GB HBM3e per GPU (Verda's
    # table; 288 GB nominal, 2.3 TB per 8-GPU node) = 251 GiB at the B200's 7.67 TB/s (costmodel/hbm.py); NVLink 5 in 8-GPU domains; one ConnectX-8
    # 800 Gb/s NIC per GPU; an x86 host (DGX B300: Intel Xeon 6776P). Cost model: the B200's (the H100 profile rebased
    # with the B200's measured GEMM ratio: the same dense peaks, and a B300's best GEMM is a B200's within 2.5 %, 1,769
    # against 1,745 BF16 and 3,353 against 3,433 FP8 TFLOP/s, moesim/data/mamf.csv), attention at the GB300's 1.125x
    # (the same doubled exponentials; measured on a GB300, assumed here). $6.00/h: assumption, inside the $5.00-7.25
    # on-demand neocloud range Ornn's 2026 rental benchmark gives (ornnai.com, "NVIDIA B200 vs B300"); volatile. Under
    # sustained FP4 load: 0.603 of the FP4 peak, the B200's sustained FP4 rate x 1,100 / 1,000 W (costmodel/sustained.py).
    "b300": dict(
        name="HGX B300",
        device=dict(name="NVIDIA B300 SXM 288GB", sm_count=148, peak_tflops=dict(_B300_TFLOPS),
                    mem_bw_gbps=B200_HBM_GBPS, mem_gib=251.0, power_w=1100.0, usd_per_hour=6.00,
                    attention_rate_scale=GB300_ATTENTION_RATE_SCALE, sustained_fp4_fraction=B300_SUSTAINED_FP4_FRACTION,
                    fp8_split_accumulation=False, fp8_non_tn_gemm=True,
                    default_profile="h100.yaml", profile_gemm_ratio="b200-vs-h100"),
        node=_HGX_B200_NODE, cluster=_CX8_NET,
    ),
    # L40S (AD102, Ada, sm_89, 142 SMs, 350 W), eight to a PCIe server: dense tensor TFLOP/s BF16 362.05, FP8 733, FP32 91.6;
    # 48 GB GDDR6 with ECC at 864 GB/s; PCIe Gen4 x16, 64 GB/s bidirectional = 32 per direction, no NVLink (NVIDIA L40S
    # datasheet's table, as resellers reproduce it, e.g. mullet.se product 355414); nvidia-smi reports 46,068 MiB = 45.0 GiB
    # (ECC on). Link latency 5 us: assumption, as the RTX PRO 6000's. Ada has no warpgroup MMA: grouped kernels tile 16 rows.
    # Rings of 4 and 8 GPUs get the measured share of the link a two-socket PCIe server's rings reach (PCIE_RING_SHARE:
    # 17.8 and 14.2 GB/s of bus bandwidth; no L40S server's own all-reduce table was found).
    # Cost model: the H100 profile rebased on these peaks and bandwidth (no L40S kernel table). $1.86/h: assumption, AWS's
    # on-demand price for one L40S with its host share (g6e.xlarge, us-east-1, 2025); volatile.
    "l40s": dict(
        name="L40S Server (8x PCIe)",
        device=dict(name="NVIDIA L40S", sm_count=142, peak_tflops=dict(bf16=362.05, fp16=362.05, fp8=733.0, fp32=91.6),
                    mem_bw_gbps=864.0, mem_gib=45.0, power_w=350.0, usd_per_hour=1.86,
                    mma_rows=_AMPERE_MMA_ROWS, default_profile="h100.yaml"),
        node=dict(devices_per_node=8, intra_bw_gbps=32.0, intra_latency_us=5.0, ring_busbw_gbps=pcie_rings(32.0)),
        cluster=_CX7_NET,
    ),
    # RTX PRO 6000 Blackwell Server Edition (GB202, sm_120, 188 SMs, 600 W), eight to a PCIe server: dense tensor
    # TFLOP/s BF16 503.8, FP8 1,007.6, FP4 2,015.2 (half the sparse figures; NVIDIA quotes "4,000 AI TOPS" FP4 sparse and
    # 125 TFLOP/s FP32: hmc-tech.com/gpu/nvidia-rtx-pro-6000-blackwell-vs-amd-radeon-pro-duo-polaris, 2,617 MHz boost);
    # 96 GB GDDR7 on a 512-bit bus at 28 Gb/s = 1,792 GB/s (gpu.name, after VideoCardz); nvidia-smi reports 97,887 MiB
    # = 95.6 GiB (a public run log). No NVLink: the GPUs of a server talk over PCIe 5.0 x16, 32 GT/s x 16 lanes with
    # 128b/130b coding = 63 GB/s per direction; its latency (5 us) is an assumption. sm_120 has no warpgroup MMA (the
    # consumer Blackwell tensor cores run mma.sync tiles, as Ampere's and GB10's): grouped kernels tile 16 rows.
    # Cost model: the H100 profile rebased on these peaks and bandwidth (no GEMM table of this GPU: the plain rebase,
    # which reads a B200's large BF16 GEMMs ~10 % fast, see b200). Rings of 4 and 8 GPUs get less than the link: NCCL's
    # all-reduce on eight RTX 5090s (the same GB202 die) on PCIe 5.0 behind two Xeon 8480+ reaches 28 GB/s of bus
    # bandwidth at 8 GPUs and 35 at 4 (NVIDIA/nccl issue #1639, 1-8 GB messages; "determined by the bandwidth your CPU
    # and memory can deliver"), node.ring_busbw_gbps (PCIE_RING_SHARE of its 63 GB/s). $1.69/h: assumption, one
    # cloud's on-demand price for this GPU in a public pod listing (2026); volatile.
    "rtx-pro-6000": dict(
        name="RTX PRO 6000 Blackwell Server (8x PCIe)",
        device=dict(name="NVIDIA RTX PRO 6000 Blackwell Server Edition", sm_count=188,
                    peak_tflops=dict(bf16=503.8, fp16=503.8, fp8=1007.6, fp4=2015.2, fp32=125.95),
                    mem_bw_gbps=1792.0, mem_gib=95.6, power_w=600.0, usd_per_hour=1.69,
                    mma_rows=_AMPERE_MMA_ROWS, default_profile="h100.yaml"),
        node=dict(devices_per_node=8, intra_bw_gbps=63.0, intra_latency_us=5.0, ring_busbw_gbps=pcie_rings(63.0)),
        cluster=_CX7_NET,
    ),
    # GeForce RTX 4090 (AD102, Ada, sm_89, 128 of its 144 SMs, 450 W), one in a desktop: dense tensor TFLOP/s BF16 and
    # FP16 165.15 (with the fp32 accumulation PyTorch asks for), FP8 330.3, FP32 82.58; 24 GB GDDR6X on a 384-bit bus
    # at 21 Gb/s = 1,008 GB/s (waredb.com/processor/nvidia-geforce-rtx-4090; techgoing.com's launch report: 128 SMs,
    # 72 MB L2, 21 Gb/s); nvidia-smi reports 24,564 MiB = 23.99 GiB (public run logs). PCIe 4.0 x16, 32 GB/s a
    # direction, no NVLink; its latency (5 us) is an assumption, as the L40S's, and a second card's rings get the
    # PCIe server's measured share (PCIE_RING_SHARE). Ada has no warpgroup MMA: grouped kernels tile 16 rows.
    # Cost model: the H100 profile rebased on these peaks and bandwidth (no RTX 4090 kernel table). $0.10/h: a
    # $2,500 desktop around the $1,599 card over 3 years (assumption, as the Macs).
    "rtx-4090": dict(
        name="GeForce RTX 4090 desktop",
        device=dict(name="NVIDIA GeForce RTX 4090", sm_count=128,
                    peak_tflops=dict(bf16=165.15, fp16=165.15, fp8=330.3, fp32=82.58),
                    mem_bw_gbps=1008.0, mem_gib=23.99, power_w=450.0, usd_per_hour=0.10,
                    mma_rows=_AMPERE_MMA_ROWS, default_profile="h100.yaml"),
        node=dict(devices_per_node=1, intra_bw_gbps=32.0, intra_latency_us=5.0, ring_busbw_gbps=pcie_rings(32.0)),
        cluster=_SOC_NET,
    ),
    # Apple M2 (10-core GPU): 100 GB/s, up to 24 GB (HW-11); GPU ~3.6 TFLOP/s FP32 derived (HW-11);
    # FP16 runs at the FP32 rate on this GPU. ~20 W. Price: a $1,200 machine over 3 years ~ $0.05/h (assumption).
    "m2": dict(
        name="Apple M2",
        device=dict(name="Apple M2", peak_tflops=dict(fp32=3.6, fp16=3.6, bf16=3.6),
                    mem_bw_gbps=100.0, mem_gib=24.0, power_w=20.0, usd_per_hour=0.05,
                    compute_efficiency=0.6, weight_bits=_GGML_WEIGHT_BITS, **_METAL,
                    default_profile="datasheet"),
        node=_SOC_NODE | dict(intra_bw_gbps=100.0), cluster=_SOC_NET,
    ),
    # Apple M2 Max (38-core GPU): 400 GB/s, up to 96 GB (HW-12); ~13.6 TFLOP/s FP32 derived (HW-12);
    # ~60 W; a $3,500 machine over 3 years ~ $0.13/h (assumption).
    "m2-max": dict(
        name="Apple M2 Max",
        device=dict(name="Apple M2 Max", peak_tflops=dict(fp32=13.6, fp16=13.6, bf16=13.6),
                    mem_bw_gbps=400.0, mem_gib=96.0, power_w=60.0, usd_per_hour=0.13,
                    compute_efficiency=0.6, weight_bits=_GGML_WEIGHT_BITS, **_METAL,
                    default_profile="datasheet"),
        node=_SOC_NODE | dict(intra_bw_gbps=400.0), cluster=_SOC_NET,
    ),
    # Apple M2 Ultra (76-core GPU): 800 GB/s, up to 192 GB (HW-13); 27.2 TFLOP/s FP32 (HW-13);
    # ~150 W under GPU load; a $6,600 machine over 3 years ~ $0.25/h (assumption).
    "m2-ultra": dict(
        name="Apple M2 Ultra",
        device=dict(name="Apple M2 Ultra", peak_tflops=dict(fp32=27.2, fp16=27.2, bf16=27.2),
                    mem_bw_gbps=800.0, mem_gib=192.0, power_w=150.0, usd_per_hour=0.25,
                    compute_efficiency=0.6, weight_bits=_GGML_WEIGHT_BITS, **_METAL,
                    default_profile="datasheet"),
        node=_SOC_NODE | dict(intra_bw_gbps=800.0), cluster=_SOC_NET,
    ),
    # NVIDIA DGX Spark: one GB10 Grace Blackwell superchip (a 20-core Arm CPU die and a Blackwell GPU die
    # of 6,144 CUDA cores = 48 SMs, joined by NVLink-C2C), 128 GB LPDDR5x shared by CPU and GPU at
    # 273 GB/s, "up to 1 petaFLOP" of FP4 with sparsity, two ConnectX-7 200 GbE ports, $3,999 Founders
    # Edition (NVIDIA's DGX Spark product page, as listed at ai-infrastructure.net/dgx-spark); ~31
    # TFLOP/s FP32 and a 140 W TDP (GB10 architect's Hot Chips 2025 talk, as The Register reported it).
    # Tensor peaks, assumed: dense FP4 is half the sparse petaFLOP (500), FP8 and BF16 each half the
    # next, the ratios of every Blackwell datasheet; NVIDIA publishes no dense figure for GB10, so the
    # fitted compute efficiency (llama.cpp's, on a dense prompt) carries the product. sm_121 has no
    # warpgroup MMA: grouped kernels tile 16 rows, as on Ampere. 128 GB = 119.2 GiB, the OS's included.
    # Cost model: datasheet roofline with llama.cpp's CUDA backend's weight-streaming and prefill GEMM
    # efficiencies, fitted on one dense model's llama-bench rows of the same machine
    # (presets/gb10_llamacpp.py); GGUF weights (Q8_0 8.5, Q4_0 4.5, MXFP4 4.25 bits).
    # $0.15/h: the $3,999 machine over 3 years (assumption, as the Macs).
    "dgx-spark": dict(
        name="DGX Spark",
        device=dict(name="NVIDIA GB10", sm_count=48,
                    peak_tflops=dict(fp32=31.0, bf16=125.0, fp16=125.0, fp8=250.0, fp4=500.0),
                    mem_bw_gbps=gb10_llamacpp.SOURCE_BANDWIDTH_GBPS, mem_gib=119.0, power_w=140.0,
                    usd_per_hour=0.15, memory_efficiency=gb10_llamacpp.MEMORY_EFFICIENCY,
                    compute_efficiency=gb10_llamacpp.COMPUTE_EFFICIENCY,
                    expert_tile_tokens=gb10_llamacpp.EXPERT_TILE_TOKENS,
                    expert_matvec_tokens=gb10_llamacpp.EXPERT_MATVEC_TOKENS,
                    weight_bits=_GGML_WEIGHT_BITS, mma_rows=_AMPERE_MMA_ROWS, default_profile="datasheet"),
        node=_SOC_NODE | dict(intra_bw_gbps=273.0), cluster=dict(nodes=1, nic_bw_gbps=25.0, nic_latency_us=5.0),
    ),
    # Google TPU v3, one device = one TensorCore (a chip has two, each with its own 16 GiB HBM and
    # run as a separate accelerator). Google Cloud TPU docs, "TPU v3" > System architecture
    # (cloud.google.com/tpu/docs/v3): 2 TensorCores per chip; 123 TFLOP/s bf16 per chip; 32 GiB HBM2
    # at 900 GB/s per chip; measured power 123/220/262 W min/mean/max per chip; 2D torus; 1024 chips
    # per pod; all-reduce bandwidth 340 TB/s per pod. Per core: 61.5 TFLOP/s (= 2 MXUs x 128x128 x
    # 2 FLOP x 940 MHz), 450 GB/s, 16 GiB ("16 GiB on v3" per core, cloud.google.com/tpu/pricing),
    # 131 W (the 262 W measured maximum / 2). bf16 only: the MXU multiplies bf16, there is no fp16
    # and no separately published fp32 peak.
    # Links (per core, per direction): ICI reaches the 4 torus neighbours of a chip (jax-ml/scaling-book
    # tpus.md, ~1e11 B/s one-way per link); the pod's 340 TB/s all-reduce bandwidth / 1024 chips =
    # 332 GB/s per chip = 4 links x 83 GB/s, so 166 GB/s per core. A "node" is one v3-8 host board
    # (4 chips, 8 cores); boards of a slice are joined by the same ICI, not a NIC, so the cluster link
    # is ICI too. An all-to-all crosses several torus hops (~2 on a 4x4-chip slice), so it gets less
    # than this. Latency ~1 us per ICI hop (scaling-book sharding.md): 2 us inside a 2x2-chip board,
    # 5 us across boards (a few hops; assumption).
    # Price: $8.00/h per v3-8 on demand (cloud.google.com/tpu/pricing, v2/v3 single-device table;
    # list price, not re-checked) = $1.00 per core-hour.
    # Cost model: datasheet roofline; compute_efficiency 0.55 is a whole-step figure from GShard
    # (Lepikhin et al. 2020, arXiv:2006.16668), the published TPU v3 MoE most like Switch (einsum
    # dispatch/combine, experts in every other FFN, experts spread over all cores). Its MoE(128E, 12L):
    # d_model 1024, FFN 8192, 16 heads of 128, top-2 with capacity 2N/E (our capacity_factor 1.0),
    # fp32 weights and activations (Sec. 4 "Model Details", App. A.2), trains at 2.16 steps/s with 1M
    # tokens per batch on 128 cores (Table 3, row 6), ~42% MFU. Modelled as 6 blocks over all 2^20
    # tokens (encoder and decoder tokens each pass 6 layers) in fp32, this roofline gives 2.16 steps/s
    # at 0.54 (2.20 at 0.55); the ~4% FLOPs of cross-attention it leaves out bring that to 0.55-0.56.
    # The same paper measured its matmuls alone at "> 85% peak FLOPS" and attention at "> 30%"
    # (Sec. 5.2): the rest of the gap is what a roofline does not see on TPU v3 (attention, gating
    # cumsum, fp32 elementwise work, a torus all-to-all). Cross-check: GSPMD (Xu et al. 2021,
    # arXiv:2105.04663) measured 50-62% whole-step utilisation on 128-2048 TPU v3 cores; at 0.55 this
    # roofline gives 49-53% for a 7B dense model.
    # memory_efficiency: no published TPU v3 HBM streaming measurement found; the default 0.8 is kept.
    "tpu-v3": dict(
        name="Cloud TPU v3",
        device=dict(name="Google TPU v3 core", peak_tflops=dict(bf16=61.5),
                    mem_bw_gbps=450.0, mem_gib=16.0, power_w=131.0, usd_per_hour=1.00,
                    compute_efficiency=0.55, default_profile="datasheet"),
        node=dict(devices_per_node=8, intra_bw_gbps=166.0, intra_latency_us=2.0),
        cluster=dict(nodes=1, nic_bw_gbps=166.0, nic_latency_us=5.0),
    ),
}


#: Presets of one desktop machine (a SoC whose GPU shares the machine's memory), not datacenter nodes.
DESKTOP_PRESETS: tuple[str, ...] = ("m2", "m2-max", "m2-ultra", "dgx-spark")


def is_desktop_device(device_name: str) -> bool:
    """Whether a device is a desktop SoC (an Apple chip, a DGX Spark's GB10), not a datacenter GPU."""
    return device_name.startswith("Apple") or any(
        HARDWARE[p]["device"]["name"] == device_name for p in DESKTOP_PRESETS)


def display_name(name: str, devices: int | None) -> str:
    """How a table names the hardware of a run on ``devices`` devices: the preset's system name
    ("DGX A100 80GB") names a whole node, so a run on fewer devices than the preset's node holds
    shows the device and its count instead ("A100 SXM4 80GB x1"). Names of no preset stay as given."""
    preset = next((p for p in HARDWARE.values() if p["name"] == name), None)
    if preset is None or not isinstance(devices, int) or devices >= preset["node"]["devices_per_node"]:
        return name
    return f"{preset['device']['name'].removeprefix('NVIDIA ')} x{devices}"


def node_hint(plan_devices: int, devices_per_node: int, nodes: int) -> str:
    """What to set so the hardware holds ``plan_devices`` devices (for the plan-size error): a part
    of one node needs ``hardware.node.devices_per_node``, whole nodes ``hardware.cluster.nodes``;
    "" when neither fits (the plan must change)."""
    if plan_devices < devices_per_node:
        return f"set hardware.node.devices_per_node: {plan_devices} (a part of one node)"
    if plan_devices % devices_per_node == 0 and plan_devices // devices_per_node != nodes:
        return f"set hardware.cluster.nodes: {plan_devices // devices_per_node}"
    return ""
