"""Where trustser keeps what it computes: one user cache directory, overridable.

Order: the explicit argument, then ``TRUSTSER_CACHE``, then ``$XDG_CACHE_HOME/trustser`` (``~/.cache/trustser``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


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


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Publish a cache file whole or not at all, even with several processes writing it at once.

    ``write`` fills a temporary file of this process's own beside ``path`` (a shared ``path.tmp`` would let one
    process move away or truncate another's file); ``os.replace`` then publishes it in one step, with the usual
    permissions (``publish_mode``), so a reader sees either no file or a complete one, and a crash leaves only a
    hidden ``.*.tmp`` sibling. An exception from ``write`` (a failed checksum, say) leaves nothing at ``path``.
    """
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        publish_mode(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp (and safetensors) create owner-only entries; give cache entries the usual permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
    if directory:
        for child in path.iterdir():
            if child.is_file():
                publish_mode(child)
