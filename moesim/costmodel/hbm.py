"""Peak HBM bandwidth of the Blackwell parts, from the memory bus the driver reports. Pure python.

One place for the figures the presets and the tables measured on a B200 both read.
"""

from __future__ import annotations

# HBM peak of the Blackwell parts: the memory bus the driver reports times the memory clock (3,996 MHz,
# double data rate), not the 8 TB/s of the first datasheets. A B200 reports a 7,680-bit bus: 7,672 GB/s
# (pytorch/ao torchao/testing/training/roofline_utils.py @36027d8, PR #4002; NVIDIA's later Blackwell
# datasheet gives 7.7 TB/s, ai-dynamo/aiconfigurator PR #1246); a GB200 a 7,936-bit one: 7,928 GB/s
# (torch.cuda._device_limits on a GB200, pytorch/pytorch PR #172523). Each is the 8,192-bit bus of eight
# HBM3e stacks less the share of channels its usable memory lacks (180 of 192 GB: 15/16; 186: 31/32). The
# H100 profile's efficiencies are fractions of a real peak (5,120 bits x 2,619 MHz: its 3,350 GB/s), so
# rebased on 8 TB/s every memory-bound kernel of a B200 ran 4 % fast. B300 and GB300: not measured; by the
# same rule (270 of 288 GB = 15/16; 278 ~ 31/32) they take the B200's and the GB200's buses.
HBM3E_CLOCK_MHZ = 3996.0


def hbm_gbps(bus_bits: int, clock_mhz: float = HBM3E_CLOCK_MHZ) -> float:
    """Peak memory bandwidth, GB/s, of a ``bus_bits``-wide double-data-rate bus at ``clock_mhz``."""
    return bus_bits / 8 * clock_mhz * 2 / 1e3


B200_HBM_GBPS = hbm_gbps(7680)  # 7,672
GB200_HBM_GBPS = hbm_gbps(7936)  # 7,928
