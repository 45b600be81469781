"""Where trustser keeps what it computes: one user cache directory, overridable.

Order: the explicit argument, then ``TRUSTSER_CACHE``, then ``$XDG_CACHE_HOME/trustser`` (``~/.cache/trustser``).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(explicit: str | Path | None = None) -> Path:
    if explicit:
        base = Path(explicit)
    elif os.environ.get("TRUSTSER_CACHE"):
        base = Path(os.environ["TRUSTSER_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trustser"
    base = base.expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    return base
