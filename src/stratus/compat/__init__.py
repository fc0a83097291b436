"""Compatibility layers for programs written for other platforms."""
