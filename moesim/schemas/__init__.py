"""Pydantic v2 models of a scenario. All frozen, all reject unknown keys."""

from moesim.schemas._base import MAX_SEED, NOT_A_BOOLEAN, check_seed, number_not_bool
from moesim.schemas.hardware import ClusterSpec, DeviceSpec, HardwareSpec, NodeSpec
from moesim.schemas.model import DTYPE_BYTES, LocalAttentionSpec, MLASpec, ModelSpec
from moesim.schemas.placement import PlacementSpec
from moesim.schemas.plan import PlanSpec
from moesim.schemas.routing import RoutingSpec
from moesim.schemas.scenario import Scenario
from moesim.schemas.serving_options import SpeculativeSpec
from moesim.schemas.workload import ArrivalSpec, LengthDist, ServingWorkload, TrainingWorkload

__all__ = [
    "ArrivalSpec", "ClusterSpec", "DTYPE_BYTES", "DeviceSpec", "HardwareSpec", "LengthDist", "NOT_A_BOOLEAN",
    "LocalAttentionSpec", "MLASpec", "ModelSpec", "NodeSpec", "PlacementSpec", "PlanSpec", "RoutingSpec", "Scenario", "ServingWorkload",
    "SpeculativeSpec", "TrainingWorkload", "number_not_bool", "MAX_SEED", "check_seed",
]
