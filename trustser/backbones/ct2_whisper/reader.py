"""Read a CTranslate2 ``model.bin`` into memory: every variable with its stored dtype, aliases resolved.

The binary layout (``python/ctranslate2/specs/model_spec.py::_serialize``, read by ``src/models/model.cc``), all
integers little-endian::

    u32 binary_version                      (1..6)
    str spec_name; u32 spec_revision        (binary_version >= 2)
    u32 n_variables
      n × { str name; u8 rank; u32 dims[rank];
            u8 dtype_id; u32 n_bytes        (binary_version >= 4; before: u8 item_size; u32 n_items)
            bytes payload }
    u32 n_aliases; n × { str alias; str target }   (binary_version >= 3)

where ``str`` is ``u16 length`` (including a trailing NUL) followed by UTF-8 bytes and the NUL.

Nothing here is specific to Whisper: :mod:`trustser.backbones.ct2_whisper.mapping` reads Whisper out of the result.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustser.errors import WeightsNotFoundError

MAX_BINARY_VERSION = 6
"""Newest layout CTranslate2 writes (``CURRENT_BINARY_VERSION``); a newer file may have fields we would misread."""

_DTYPES: dict[int, tuple[str, np.dtype]] = {
    # Order of the DataType enum in include/ctranslate2/types.h.
    0: ("float32", np.dtype("<f4")),
    1: ("int8", np.dtype("i1")),
    2: ("int16", np.dtype("<i2")),
    3: ("int32", np.dtype("<i4")),
    4: ("float16", np.dtype("<f2")),
    5: ("bfloat16", np.dtype("<u2")),  # numpy has no bfloat16: read the raw bits, widened to float32 below
}
_LEGACY_ITEM_SIZES = {4: 0, 2: 2, 1: 1}
"""binary_version < 4 stored an item size instead of a dtype; CTranslate2 maps it to float32/int16/int8."""


class Ct2FormatError(WeightsNotFoundError):
    """A file meant to hold CTranslate2 weights is not a (readable, supported) CTranslate2 model."""


@dataclass
class Ct2Model:
    """One CTranslate2 ``model.bin``, fully read into memory.

    ``variables`` maps every name, aliases included, to its array as stored (float16 stays float16, int8 stays int8;
    bfloat16 is widened to float32 because numpy cannot hold it). ``aliases`` maps each alias to the stored name it
    shares data with, so callers can tell copies from ties; ``dtypes`` keeps the on-disk dtype names.
    """

    path: Path
    binary_version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.variables[name]
        except KeyError:
            raise Ct2FormatError(f"{self.path}: variable '{name}' is missing from this {self.spec} model") from None

    def scalar(self, name: str, default: int | None = None) -> int:
        """An integer hyper-parameter CTranslate2 stores as a rank-0 variable (e.g. ``encoder/num_heads``)."""
        if name not in self.variables:
            if default is None:
                raise Ct2FormatError(f"{self.path}: scalar '{name}' is missing from this {self.spec} model")
            return default
        return int(np.asarray(self.variables[name]).reshape(()))

    def float32(self, name: str) -> np.ndarray:
        """The variable as float32, dequantised when CTranslate2 stored it as int8/int16 with a ``<name>_scale``.

        CT2 quantises as ``q = round(w * scale)`` (scale per output row for int8, one scalar for int16), so
        ``w = q / scale``.
        """
        value = self[name]
        scale_name = f"{name}_scale"
        if value.dtype.kind in "iu" and scale_name in self.variables:
            scale = self.variables[scale_name].astype(np.float32)
            if scale.ndim == 1 and value.ndim > 1:
                scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
            return (value.astype(np.float32) / scale).astype(np.float32)
        if value.dtype.kind != "f":
            raise Ct2FormatError(f"{self.path}: variable '{name}' is {value.dtype} without a scale; expected floats")
        return value.astype(np.float32)


class _Cursor:
    """Sequential little-endian reader over a buffer that reports truncation as a Ct2FormatError."""

    def __init__(self, buffer: Any, path: Path) -> None:
        self.buffer = buffer
        self.path = path
        self.offset = 0

    def _take(self, n: int) -> int:
        start = self.offset
        if n < 0 or start + n > len(self.buffer):
            raise Ct2FormatError(
                f"{self.path}: truncated CTranslate2 file (needs {n} bytes at offset {start}, size {len(self.buffer)})"
            )
        self.offset += n
        return start

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        size = struct.calcsize(fmt)
        return struct.unpack_from(fmt, self.buffer, self._take(size))

    def u8(self) -> int:
        return self.unpack("<B")[0]

    def u16(self) -> int:
        return self.unpack("<H")[0]

    def u32(self) -> int:
        return self.unpack("<I")[0]

    def string(self) -> str:
        length = self.u16()
        start = self._take(length)
        raw = bytes(self.buffer[start : start + length])
        if length == 0 or raw[-1] != 0:
            raise Ct2FormatError(f"{self.path}: not a CTranslate2 file (malformed string at offset {start})")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise Ct2FormatError(f"{self.path}: not a CTranslate2 file (non-UTF-8 string at offset {start})") from None

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        start = self._take(count * dtype.itemsize)
        # Copy out of the mmap so the file can be closed; the copy is the only resident one.
        return np.frombuffer(self.buffer, dtype=dtype, count=count, offset=start).copy()

    @property
    def remaining(self) -> int:
        return len(self.buffer) - self.offset


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (a directory holding one is accepted too).

    Raises Ct2FormatError naming the file when it is missing, truncated, has trailing bytes, or is not CTranslate2.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise Ct2FormatError(f"{path}: no CTranslate2 model file there")
    with open(path, "rb") as handle:
        if path.stat().st_size == 0:
            raise Ct2FormatError(f"{path}: empty file, not a CTranslate2 model")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer, path)
            model = _read_model(cursor)
            if cursor.remaining:
                raise Ct2FormatError(f"{path}: {cursor.remaining} unexpected trailing bytes after the model data")
    return model


def _read_model(cursor: _Cursor) -> Ct2Model:
    path = cursor.path
    version = cursor.u32()
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise Ct2FormatError(
            f"{path}: not a CTranslate2 model (binary version {version}; known 1..{MAX_BINARY_VERSION})"
        )
    spec, revision = (cursor.string(), cursor.u32()) if version >= 2 else ("", 1)
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(cursor.u32()):
        name, array, dtype_name = _read_variable(cursor, version)
        if name in variables:
            raise Ct2FormatError(f"{path}: variable '{name}' is stored twice")
        variables[name], dtypes[name] = array, dtype_name
    aliases = _read_aliases(cursor) if version >= 3 else {}
    _resolve_aliases(path, variables, aliases, dtypes)
    return Ct2Model(path, version, spec, revision, variables, aliases, dtypes)


def _read_variable(cursor: _Cursor, version: int) -> tuple[str, np.ndarray, str]:
    name = cursor.string()
    shape = cursor.unpack(f"<{cursor.u8()}I")
    if version >= 4:
        type_id, n_bytes = cursor.u8(), cursor.u32()
    else:
        item_size = cursor.u8()
        type_id, n_bytes = _LEGACY_ITEM_SIZES.get(item_size, -1), cursor.u32() * item_size
    if type_id not in _DTYPES:
        raise Ct2FormatError(f"{cursor.path}: variable '{name}' has unknown dtype id {type_id}")
    dtype_name, dtype = _DTYPES[type_id]
    count = math.prod(shape)
    if n_bytes != count * dtype.itemsize:
        raise Ct2FormatError(
            f"{cursor.path}: variable '{name}' declares {n_bytes} bytes for shape {list(shape)} of {dtype_name}"
        )
    array = cursor.array(dtype, count).reshape(shape)
    if dtype_name == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array, dtype_name


def _read_aliases(cursor: _Cursor) -> dict[str, str]:
    return {cursor.string(): cursor.string() for _ in range(cursor.u32())}


def _resolve_aliases(
    path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], dtypes: dict[str, str]
) -> None:
    """Make every alias (and, as CTranslate2 does, its ``_scale``) point at its target's array, in place."""
    for alias in list(aliases):
        target, seen = aliases[alias], {alias}
        while target in aliases and target not in variables:  # CT2 never chains, but a chain is harmless
            if target in seen:
                raise Ct2FormatError(f"{path}: alias cycle through '{target}'")
            seen.add(target)
            target = aliases[target]
        if target not in variables:
            raise Ct2FormatError(f"{path}: alias '{alias}' points at missing variable '{target}'")
        variables[alias], dtypes[alias] = variables[target], dtypes[target]
        if f"{target}_scale" in variables and f"{alias}_scale" not in variables:
            variables[f"{alias}_scale"] = variables[f"{target}_scale"]
            dtypes[f"{alias}_scale"] = dtypes[f"{target}_scale"]
