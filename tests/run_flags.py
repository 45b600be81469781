"""Command-line flags shared by the tests that run ``trustser run`` end to end."""

FAST_RUN = [
    "--backbone",
    "whisper_tiny",
    "--random-init",
    "--folds",
    "1",
    "--schedule",
    "paper",
    "--epochs",
    "1",
    "--no-progress",
    "--no-safety",
    "--no-probes",
    "--no-cost",
]
"""The cheapest complete run: one fold, one epoch, the smallest backbone, no attacks / probes / timing."""
