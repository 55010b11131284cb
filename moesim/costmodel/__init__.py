"""The cost model: every operation the engines play, turned into seconds.

``CostModel`` is the one interface the engines call (a ``typing.Protocol``). ``build_cost_model``
picks its implementation for a scenario's hardware: ``ProfiledCostModel``, which reads a fitted
calibration profile (``profile.py``: measured efficiencies in place of datasheet ones), or
``RooflineCostModel``, the datasheet roofline (``roofline.py``); both share the alpha-beta
collectives (``comm.py``) through ``CostModelBase``. ``cost_model(hw, profile)`` builds one
directly (calibration code and tests).
"""

from moesim.costmodel.base import CostModelBase
from moesim.costmodel.datasheet import RooflineCostModel
from moesim.costmodel.model import CostModel, build_cost_model, cost_model
from moesim.costmodel.profiled import ProfiledCostModel

__all__ = ["CostModel", "CostModelBase", "ProfiledCostModel", "RooflineCostModel", "build_cost_model",
           "cost_model"]
