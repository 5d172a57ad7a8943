"""Shared library of the stages: typed params, pure image and metric functions, I/O helpers."""
