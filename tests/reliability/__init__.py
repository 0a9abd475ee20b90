"""Reliability suite: fault injection, tuner faults, interruption, soak, peer behaviour, bad input.

A package (not a bare directory) so that its `conftest.py` and helper modules get unique
module names (`reliability.conftest`, ...) next to `tests/conftest.py`, and so that
worker processes can import `reliability.faulty` by name.
"""
