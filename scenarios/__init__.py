"""The scenarios shipped with moesim, installed as package data of ``moesim.scenarios``.

Each ``*.yaml`` here is a runnable scenario; ``moesim scenarios`` lists them and every command that
takes a scenario accepts one of their names (``moesim simulate mixtral-8x7b-h100-train``).
``traces/`` holds the request traces they reference by relative path.
"""
