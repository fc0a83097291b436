"""Helpers for testing code that uses stratus, and stratus itself."""

from stratus.testing.clock import FakeClock

__all__ = ["FakeClock"]
