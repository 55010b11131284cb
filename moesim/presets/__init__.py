"""Named presets of models and hardware: plain data, one source comment per entry."""

from moesim.presets.hardware import HARDWARE
from moesim.presets.models import MODELS

__all__ = ["HARDWARE", "MODELS"]
