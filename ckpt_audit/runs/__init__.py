"""Run-level logic: discovering checkpoints in a run, auditing them, trend, compare, watch state,
gates.
"""
