"""moesim: a discrete-event simulator and cost model for Mixture-of-Experts clusters."""

from moesim.decode_step import decode_step
from moesim.errors import InputError, MoesimError, RunError
from moesim.loader import load_scenario, scenario_from_dict
from moesim.results import SimResult
from moesim.schemas import Scenario
from moesim.simulate import simulate

__version__ = "0.1.0"

__all__ = ["InputError", "MoesimError", "RunError", "Scenario", "SimResult", "decode_step", "load_scenario",
           "scenario_from_dict", "simulate", "__version__"]
