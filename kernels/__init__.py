"""PyTorch reference MoE layer, a Triton grouped-GEMM MoE kernel (lazy), and timing helpers.

torch is imported by the submodules; triton only when a Triton kernel is first built.
"""
