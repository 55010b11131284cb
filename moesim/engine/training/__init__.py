"""The training engine: one optimizer step of one data-parallel replica, priced on the op graph
(``layer_costs``), laid out by a pipeline schedule (``schedules``, ``pipeline``, ``timeline``) and
summarised (``summary``); ``step.simulate_training`` is the entry point."""
