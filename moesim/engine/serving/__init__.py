"""The serving engine: continuous batching of requests (``requests``, ``batching``) over replicas
whose iterations are priced on the op graph (``decode_cost``); ``simulate.simulate_serving`` is the
entry point and ``metrics`` its summary."""
