"""Test support: fixture builders, servers and CLI helpers shared by the tests (imported as
tests.support).
"""
