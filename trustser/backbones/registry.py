"""The backbone registry: one entry per backbone, holding its published architecture config and weight sources.

Adding a backbone of a known family (``family``: whisper, ssl, s3prl; see ``trustser.backbones.families``) is one
config file in ``configs/`` and one ``register_backbone`` call; the contract tests (tests/test_backbone_contract.py)
then check it with everything else registered. CONTRIBUTING.md says more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trustser.backbones.base import BackboneSpec, PaperFigures
from trustser.errors import UnknownNameError

CONFIG_DIR = Path(__file__).parent / "configs"
BACKBONES: dict[str, BackboneSpec] = {}


def load_config(file_name: str) -> dict[str, Any]:
    text = (CONFIG_DIR / file_name).read_text()
    return yaml.safe_load(text) if file_name.endswith(".yaml") else json.loads(text)


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in BACKBONES:
        raise ValueError(f"backbone '{spec.name}' registered twice")
    BACKBONES[spec.name] = spec
    return spec


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UnknownNameError("backbone", name, list(BACKBONES)) from None


register_backbone(
    BackboneSpec(
        name="apc",
        family="s3prl",
        description="Autoregressive Predictive Coding (3-layer GRU), s3prl",
        config=load_config("apc.yaml"),
        num_layers=3,
        hidden_size=512,
        includes_input_layer=False,
        paper=PaperFigures(layers=3, hidden_size=512, params_m=4.11, gflops_6s=2.5),
        hf_repo_id="leo19941227/apc_series",
        hf_cache_file="apc_360hr.ckpt",
        s3prl_url="https://huggingface.co/leo19941227/apc_series/resolve/main/apc_360hr.ckpt",
        front_end={"win_samples": 400, "hop_samples": 160, "snip_edges": True},
    )
)
register_backbone(
    BackboneSpec(
        name="tera",
        family="s3prl",
        description="TERA (3-layer Transformer on log-mel), s3prl",
        config=load_config("tera.yaml"),
        num_layers=3,
        hidden_size=768,
        paper=PaperFigures(layers=4, hidden_size=768, params_m=21.33, gflops_6s=12.8),
        hf_repo_id="s3prl/tera",
        hf_cache_file="tera_logMelBase_T_F_M_AdamW_b32_1m_960hr_drop1/states-1000000.ckpt",
        s3prl_url="https://huggingface.co/s3prl/tera/resolve/main/"
        "tera_logMelBase_T_F_M_AdamW_b32_1m_960hr_drop1/states-1000000.ckpt",
        front_end={"win_samples": 400, "hop_samples": 160, "snip_edges": False},
    )
)
for _name, _desc, _paper, _repo, _packaged in (
    (
        "whisper_tiny",
        "Whisper Tiny encoder (multilingual)",
        PaperFigures(4, 384, 8.21, 2.3),
        "openai/whisper-tiny",
        None,
    ),
    (
        "whisper_tiny_en",
        "Whisper tiny.en encoder (English-only; not the paper's whisper_tiny)",
        None,
        "openai/whisper-tiny.en",
        "whisper_tiny_en",
    ),
    (
        "whisper_base",
        "Whisper Base encoder (multilingual)",
        PaperFigures(8, 512, 20.59, 6.0),
        "openai/whisper-base",
        "whisper_base",
    ),
    (
        "whisper_small",
        "Whisper Small encoder (multilingual)",
        PaperFigures(12, 768, 88.15, 26.2),
        "openai/whisper-small",
        None,
    ),
):
    _config = load_config(f"{_name}.json")
    register_backbone(
        BackboneSpec(
            name=_name,
            family="whisper",
            description=_desc,
            config=_config,
            num_layers=_config["encoder_layers"],
            hidden_size=_config["d_model"],
            paper=_paper,
            hf_repo_id=_repo,
            packaged=_packaged,
        )
    )
register_backbone(
    BackboneSpec(
        name="wav2vec2_base",
        family="ssl",
        description="wav2vec 2.0 Base (LibriSpeech 960 h, no fine-tuning)",
        config=load_config("wav2vec2_base.json"),
        num_layers=12,
        hidden_size=768,
        paper=PaperFigures(12, 768, 95.04, 41.7),
        hf_repo_id="facebook/wav2vec2-base",
        front_end={"do_normalize": True},
    )
)
register_backbone(
    BackboneSpec(
        name="wavlm_base_plus",
        family="ssl",
        description="WavLM Base+ (94k h)",
        config=load_config("wavlm_base_plus.json"),
        num_layers=12,
        hidden_size=768,
        paper=PaperFigures(12, 768, 94.70, 33.2),
        hf_repo_id="microsoft/wavlm-base-plus",
        front_end={"do_normalize": False},
    )
)
register_backbone(
    BackboneSpec(
        name="hubert_base",
        family="ssl",
        description="HuBERT Base (LibriSpeech 960 h, no fine-tuning)",
        config=load_config("hubert_base.json"),
        num_layers=12,
        hidden_size=768,
        hf_repo_id="facebook/hubert-base-ls960",
        front_end={"do_normalize": False},  # pretrained on raw waveforms (fairseq task.normalize: false)
    )
)
