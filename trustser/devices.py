"""Where a run computes: ``RunConfig.device`` (``--device auto|cpu|cuda|cuda:N``) resolved to a torch device.

The device is where the models live: the backbone is moved there once per run, and everything that runs a model
(extraction, head training, probes, attacks, corruptions) sends its inputs to the device of the model's parameters
(``module_device``) and brings its outputs back to the CPU. Cached features, metrics and the deployable model stay on
the CPU, so a cache filled on one device serves the other (entries record the device they were computed on).

``auto`` takes the first CUDA device when torch sees one, else the CPU. Asking for CUDA where there is none is a
ConfigError naming the setting, before anything runs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trustser.errors import ConfigError


def resolve_device(setting: str | None = "auto") -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` → a device this machine has (the setting's form is checked by the
    schema, ``trustser.run_config.check_device``)."""
    text = (setting or "auto").strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device '{setting}': torch sees no CUDA device (torch {torch.__version__}, built with CUDA "
            f"{torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    device = torch.device(text)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device '{setting}': this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    return torch.device("cuda", index)


def module_device(module: nn.Module | Any) -> torch.device:
    """The device of a model's first parameter (or buffer): where its inputs must go. The CPU for one without any,
    or for a model that is not a torch module (a test's stand-in classifier)."""
    parameters, buffers = getattr(module, "parameters", None), getattr(module, "buffers", None)
    for tensor in (*(parameters() if parameters else ()), *(buffers() if buffers else ())):
        return tensor.device
    return torch.device("cpu")
