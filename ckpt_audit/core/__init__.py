"""The analysis core: key-pattern tables, discovery of gains, conventions, statistics, policy,
audit, verdict.
"""
