"""APC and TERA through s3prl's own upstream experts.

s3prl's experts read the architecture config from the checkpoint, and its wheel ships no pretraining configs. The
registry therefore keeps the published configs (s3prl/pretrain/apc/config_model.yaml,
s3prl/pretrain/tera/config_model.yaml) as data: for random init we build the exact architecture from them, save
a checkpoint in the expert's own format, and load it through the same expert a real checkpoint goes through, so
both paths share every line of s3prl's feature extraction and model code.

Each clip runs alone (s3prl pads batches and APC's CMVN/TERA's level normalisation are per clip anyway), so a
clip's features never depend on its batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.backbones.base import Backbone, BackboneOutput, BackboneSpec, lengths_to_mask
from trustser.paths import write_atomically


class S3prlBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, expert: nn.Module, layer_stack: Callable[[nn.Module], nn.ModuleList]) -> None:
        super().__init__()
        self.spec = spec
        self.expert = expert
        self._layer_stack = layer_stack

    def output_lengths(self, lengths: Tensor) -> Tensor:
        win, hop = self.spec.front_end["win_samples"], self.spec.front_end["hop_samples"]
        if self.spec.front_end.get("snip_edges", False):
            return torch.div(lengths - win, hop, rounding_mode="floor") + 1
        return torch.div(lengths, hop, rounding_mode="floor") + 1

    def encoder_layers(self) -> nn.ModuleList:
        return self._layer_stack(self.expert)

    def forward(self, waves: Tensor, lengths: Tensor) -> BackboneOutput:
        per_clip = []
        for i, n in enumerate(lengths.tolist()):
            states = self.expert([waves[i, :n]])["hidden_states"]
            per_clip.append(torch.stack([s[0] for s in states]))  # [layers, frames, hidden]
        frames = torch.tensor([h.shape[1] for h in per_clip], device=waves.device)
        longest = int(frames.max())
        hidden = torch.stack([F.pad(h, (0, 0, 0, longest - h.shape[1])) for h in per_clip])
        return BackboneOutput(hidden, lengths_to_mask(frames, longest))

    def __deepcopy__(self, memo: dict) -> "S3prlBackbone":
        """A working deep copy (e.g. a backbone with fine-tuned top layers).

        s3prl's experts (APC) collect hidden states through forward hooks whose closures hold the expert's own
        list; copied as they are, the copy's hooks would append to the original's list and the copy would find
        no hidden states. The copy's hooks are re-registered on its own modules and list.
        """
        twin = self.__class__.__new__(self.__class__)
        memo[id(self)] = twin
        twin.__dict__.update(copy.deepcopy(self.__dict__, memo))
        expert = twin.expert
        for hook in getattr(expert, "hooks", []):
            if hook.handler is not None:
                hook.handler.remove()  # the copied handle points at the copy's own hook dict
                hook.handler = None
            expert._register_hook_handler(hook)
        return twin


def _random_apc_checkpoint(spec: BackboneSpec) -> dict[str, Any]:
    from s3prl.upstream.apc.apc import APC
    from s3prl.upstream.apc.audio import create_transform

    config = copy.deepcopy(spec.config)  # s3prl pops keys from the dicts it is given
    _, feat_dim = create_transform(copy.deepcopy(config["data"]["audio"]))
    model = APC(feat_dim, **config["model"]["paras"])
    return {"config": config, "model": model.state_dict()}


def _random_tera_checkpoint(spec: BackboneSpec) -> dict[str, Any]:
    from s3prl.upstream.baseline.preprocessor import get_preprocessor
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

    config = copy.deepcopy(spec.config)  # s3prl pops keys from the dicts it is given
    _, inp_dim, _ = get_preprocessor(copy.deepcopy(config["audio"]), process_input_only=True)
    model = TransformerModel(TransformerConfig(copy.deepcopy(config["transformer"])), inp_dim)
    return {"Config": config, "Transformer": model.state_dict()}


RANDOM_CHECKPOINTS: dict[str, Callable[[BackboneSpec], dict[str, Any]]] = {
    "apc": _random_apc_checkpoint,
    "tera": _random_tera_checkpoint,
}


def sinusoid_table(hidden_size: int, max_len: int) -> Tensor:
    """s3prl's mockingjay/TERA position table, vectorised: the same float64 arithmetic, so identical values.

    s3prl builds it with a Python double loop over 24,000 positions (about 30 s per process); the
    function is lru-cached there, so we install this equivalent before the expert first asks for it.
    """
    import numpy as np

    position = np.arange(max_len, dtype=np.float64)[:, None]
    hid_idx = np.arange(hidden_size)[None, :]
    table = position / np.power(10000, 2 * (hid_idx // 2) / hidden_size)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table)


def _install_fast_sinusoid_table() -> None:
    import functools

    from s3prl.upstream.mockingjay import builder

    if getattr(builder.get_sinusoid_table, "_trustser_fast", False):
        return

    @functools.lru_cache(maxsize=16)
    def fast(hidden_size: int) -> Tensor:
        return sinusoid_table(hidden_size, builder.MAX_SEQLEN)

    fast._trustser_fast = True  # type: ignore[attr-defined]
    fast._original = builder.get_sinusoid_table  # type: ignore[attr-defined]
    builder.get_sinusoid_table = fast


def _expert_class(kind: str) -> type:
    if kind == "apc":
        from s3prl.upstream.apc.expert import UpstreamExpert
    else:
        from s3prl.upstream.tera.expert import UpstreamExpert

        _install_fast_sinusoid_table()
    return UpstreamExpert


LAYER_STACKS: dict[str, Callable[[nn.Module], nn.ModuleList]] = {
    "apc": lambda expert: expert.model.rnn_layers,
    "tera": lambda expert: expert.transformer.model.encoder.layer,
}


def random_checkpoint_path(spec: BackboneSpec, cache: Path) -> Path:
    """Write (once per config and seed) a randomly initialised checkpoint in the expert's format."""
    kind = spec.config["s3prl_kind"] if "s3prl_kind" in spec.config else spec.name
    seed = torch.initial_seed()
    digest = hashlib.sha256(json.dumps(spec.config, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / "random_init" / f"{spec.name}-{digest}-seed{seed}.ckpt"
    if not path.exists():  # two processes building it at once both write the same content; one file wins whole
        write_atomically(path, lambda tmp: torch.save(RANDOM_CHECKPOINTS[kind](spec), tmp))
    return path


def check_checkpoint_is_safe(path: Path) -> None:
    """Refuse checkpoints that need arbitrary unpickling before s3prl (which unpickles fully) touches them.

    s3prl's experts call ``torch.load(..., weights_only=False)``, which executes any code a pickle carries. We load
    the file first with ``weights_only=True`` (tensors, dicts, lists, numbers, strings only); a checkpoint that
    passes holds nothing executable, so s3prl's own load of it is safe.
    """
    from trustser.errors import WeightsNotFoundError

    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsNotFoundError(
            f"{path}: refused: not loadable with torch.load(weights_only=True) ({first[:200]}). It may carry "
            "pickled objects (old s3prl checkpoints pickle their optimizer); re-save only its tensors and configs, "
            "e.g. torch.save({k: ckpt[k] for k in ('Config', 'Transformer')}, new_path)."
        ) from None


def build_s3prl(spec: BackboneSpec, checkpoint: Path | None, cache: Path | None = None) -> S3prlBackbone:
    from trustser.paths import cache_dir

    kind = spec.name
    if checkpoint is None:
        checkpoint = random_checkpoint_path(spec, cache_dir(cache))
    check_checkpoint_is_safe(Path(checkpoint))
    expert = _expert_class(kind)(str(checkpoint))
    expert.eval()
    return S3prlBackbone(spec, expert, LAYER_STACKS[kind])
