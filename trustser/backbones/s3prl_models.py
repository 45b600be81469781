"""APC and TERA through s3prl's own upstream experts.

s3prl's experts read the architecture config from the checkpoint, and its wheel ships no pretraining configs. The
registry therefore keeps the published configs (s3prl/pretrain/apc/config_model.yaml,
s3prl/pretrain/tera/config_model.yaml) as data: for random init we build the exact architecture from them, save
a checkpoint in the expert's own format, and load it through the same expert a real checkpoint goes through, so
both paths share every line of s3prl's feature extraction and model code.

Each clip runs alone (s3prl pads batches and APC's CMVN/TERA's level normalisation are per clip anyway), so a
clip's features never depend on its batch.

:class:`S3prlFamily` holds one :class:`S3prlKind` per s3prl upstream (the config's ``s3prl_kind``): its expert,
random checkpoint, layer stack, front-end module and top-layer class. Another checkpoint of a known kind is one
config file and one ``register_backbone`` call; a new upstream is one more kind here.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trustser.backbones.base import (
    Backbone,
    BackboneFamily,
    BackboneOutput,
    BackboneSpec,
    FrontEndSplit,
    lengths_to_mask,
    tiny_spec,
)
from trustser.backbones.top_layers import TopLayers
from trustser.errors import ConfigError
from trustser.paths import write_atomically


def s3prl_kind(spec: BackboneSpec) -> str:
    """Which s3prl upstream the spec is: its config's ``s3prl_kind`` (``apc``, ``tera``), else its name."""
    return spec.config["s3prl_kind"] if "s3prl_kind" in spec.config else spec.name


class S3prlBackbone(Backbone):
    def __init__(
        self, spec: BackboneSpec, expert: nn.Module, layer_stack: Callable[[nn.Module], nn.ModuleList]
    ) -> None:
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


def random_checkpoint_path(spec: BackboneSpec, cache: Path) -> Path:
    """Write (once per config and seed) a randomly initialised checkpoint in the expert's format."""
    kind = kind_of(spec).name
    seed = torch.initial_seed()
    digest = hashlib.sha256(json.dumps(spec.config, sort_keys=True).encode()).hexdigest()[:12]
    path = cache / "random_init" / f"{spec.name}-{digest}-seed{seed}.ckpt"
    if not path.exists():  # two processes building it at once both write the same content; one file wins whole
        write_atomically(path, lambda tmp: torch.save(KINDS[kind].random_checkpoint(spec), tmp))
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

    kind = kind_of(spec)
    if checkpoint is None:
        checkpoint = random_checkpoint_path(spec, cache_dir(cache))
    check_checkpoint_is_safe(Path(checkpoint))
    expert = kind.expert_class()(str(checkpoint))
    expert.eval()
    return S3prlBackbone(spec, expert, kind.layer_stack)


# -- fine-tuning ------------------------------------------------------------------------------------------------------


class ApcTop(TopLayers):
    """APC: no input state is exposed (states = the GRU outputs, residual added for layers > 0), so k <= L - 1.
    A unidirectional GRU is causal, so trailing padding never reaches a clip's real frames: no packing is needed."""

    def __init__(self, backbone: Backbone, k: int) -> None:
        model = backbone.expert.model
        if getattr(model, "apply_vq", False):
            raise ConfigError("fine-tuning VQ-APC is not supported (its last layer is vector-quantised)")
        super().__init__(model.rnn_layers, k, backbone.spec.num_hidden_states)
        self.dropout = copy.deepcopy(model.rnn_dropout)
        self.residual = bool(model.rnn_residual)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        states = []
        for offset, gru in enumerate(self.layers):
            gru.flatten_parameters()  # as APC does; a deep copy's weights need not be one contiguous chunk on GPU
            out = self.dropout(gru(x)[0])
            if self.residual and self.first_layer + offset > 0:
                out = out + x
            states.append(out)
            x = out
        return states


class TeraTop(TopLayers):
    """TERA (post-LN, s3prl mockingjay layers): state 0 = input representation, state i = output of layer i-1; the
    attention mask is s3prl's own additive (1 - mask) * -10000."""

    def __init__(self, backbone: Backbone, k: int) -> None:
        encoder = backbone.expert.transformer.model.encoder
        if encoder.pre_layer_norm:
            raise ConfigError(
                "fine-tuning a pre-LN TERA is not supported: its cached states are layer-normed "
                "copies, not the layers' inputs"
            )
        super().__init__(encoder.layer, k, backbone.spec.num_hidden_states)

    def run(self, x: Tensor, mask: Tensor) -> list[Tensor]:
        extended = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0  # s3prl TransformerModel's own mask
        states = []
        for layer in self.layers:
            x = layer(x, extended, None)
            states.append(x)
        return states


# -- the family -------------------------------------------------------------------------------------------------------


def _apc_expert() -> type:
    from s3prl.upstream.apc.expert import UpstreamExpert

    return UpstreamExpert


def _tera_expert() -> type:
    from s3prl.upstream.tera.expert import UpstreamExpert

    _install_fast_sinusoid_table()
    return UpstreamExpert


def _tiny_apc(config: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    # s3prl's APC expert hooks rnn_layers[1] and [2] by name: it runs three layers or none
    paras = {**config["model"]["paras"], "num_layers": 3, "hidden_size": 32}
    return {**config, "model": {**config["model"], "paras": paras}}, 3, 32


def _tiny_tera(config: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    transformer = {
        **config["transformer"],
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    return {**config, "transformer": transformer}, 2, 32


@dataclass(frozen=True)
class S3prlKind:
    """One s3prl upstream, as trustser runs it."""

    name: str  # the config's s3prl_kind
    expert_class: Callable[[], type]  # s3prl's UpstreamExpert for it (imported when first built)
    random_checkpoint: Callable[[BackboneSpec], dict[str, Any]]  # the expert's checkpoint format, random weights
    layer_stack: Callable[[nn.Module], nn.ModuleList]  # the expert's encoder layers
    front_end: Callable[[nn.Module], nn.Module]  # the expert's waveform → frames module (FLOPs split)
    top: type[TopLayers]
    tiny: Callable[[dict[str, Any]], tuple[dict[str, Any], int, int]]  # (config, layers, hidden) at toy size


KINDS: dict[str, S3prlKind] = {
    kind.name: kind
    for kind in (
        S3prlKind(
            "apc",
            expert_class=_apc_expert,
            random_checkpoint=_random_apc_checkpoint,
            layer_stack=lambda expert: expert.model.rnn_layers,
            front_end=lambda expert: expert.preprocessor,  # kaldi fbank + CMVN
            top=ApcTop,
            tiny=_tiny_apc,
        ),
        S3prlKind(
            "tera",
            expert_class=_tera_expert,
            random_checkpoint=_random_tera_checkpoint,
            layer_stack=lambda expert: expert.transformer.model.encoder.layer,
            front_end=lambda expert: expert.transformer.extracter,  # STFT log-mel (+ the MFCC it also computes)
            top=TeraTop,
            tiny=_tiny_tera,
        ),
    )
}
RANDOM_CHECKPOINTS: dict[str, Callable[[BackboneSpec], dict[str, Any]]] = {
    name: kind.random_checkpoint for name, kind in KINDS.items()
}


def kind_of(spec: BackboneSpec) -> S3prlKind:
    try:
        return KINDS[s3prl_kind(spec)]
    except KeyError:
        raise ConfigError(
            f"backbone '{spec.name}': s3prl_kind '{s3prl_kind(spec)}' is not one trustser runs; "
            f"known: {', '.join(KINDS)}"
        ) from None


class S3prlFamily(BackboneFamily):
    """s3prl upstream experts (APC, TERA), run through s3prl's own code; checkpoints are single files."""

    name = "s3prl"
    weights_are_a_file = True

    def build(self, spec: BackboneSpec, weights: Path | None) -> S3prlBackbone:
        return build_s3prl(spec, weights)

    def front_end(self, backbone: Backbone) -> FrontEndSplit:
        return FrontEndSplit(kind_of(backbone.spec).front_end(backbone.expert), backbone)

    # dropout_like: none; s3prl's APC and TERA drop out through nn.Dropout modules only

    def top_layers(self, backbone: Backbone, k: int) -> TopLayers:
        return kind_of(backbone.spec).top(backbone, k)

    def tiny(self, spec: BackboneSpec) -> BackboneSpec:
        config, layers, hidden = kind_of(spec).tiny(spec.config)
        return tiny_spec(spec, config, num_layers=layers, hidden_size=hidden)
