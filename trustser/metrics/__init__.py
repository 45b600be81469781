"""Trust metrics, one module per dimension (performance, fairness, ...): pure functions, arrays in, reports out.

Submodules are imported where used (``from trustser.metrics.fairness import fairness_report``) so that training
code does not pay for fairlearn/pandas imports it does not need.
"""
