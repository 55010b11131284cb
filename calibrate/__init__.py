"""Calibration: microbenchmarks on the local device -> measurements -> fitted profile file.

Importing this package does not import torch; the benchmark modules import it when they run.
"""
