"""User-facing errors: each carries a one-line message naming the file or value at fault.

The CLI prints these without a traceback; anything else is a bug.
"""


class TrustserError(Exception):
    """Base class for errors whose message is meant for the user as is."""


class ConfigError(TrustserError):
    """A configuration value (CLI option, YAML key) is missing or invalid."""


class UnknownNameError(ConfigError):
    """A registry lookup failed; the message lists what is registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} '{name}'; known: {', '.join(sorted(known))}")


class CorpusNotFoundError(TrustserError):
    """The corpus root or a required metadata file is missing."""


class AudioError(TrustserError):
    """An audio file cannot be used; ``reason`` is a short machine-readable tag counted in skip reports."""

    def __init__(self, path: object, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class WeightsNotFoundError(TrustserError):
    """No pretrained weights were found; the message lists every place that was tried."""


class ChecksumError(TrustserError):
    """A file's checksum differs from the pinned value."""
