"""The cost model: every operation the engines play, turned into seconds.

``CostModel`` is the one interface the engines call. It combines the datasheet roofline
(``roofline.py``), the alpha-beta collectives (``comm.py``) and, when present, a fitted
calibration profile (``profile.py``) that replaces datasheet efficiencies with measured ones.
"""

from moesim.costmodel.model import CostModel, build_cost_model

__all__ = ["CostModel", "build_cost_model"]
