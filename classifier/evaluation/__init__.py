"""Evaluation: scores, health checks, charts and figures (charts, plotting), and views inside the
trained network (network_views).
"""
