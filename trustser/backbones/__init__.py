"""Backbones: registry of specs, builders per family, weight resolution."""

from trustser.backbones.base import Backbone, BackboneOutput, BackboneSpec
from trustser.backbones.registry import BACKBONES, get_backbone_spec, register_backbone

__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "BackboneSpec", "get_backbone_spec", "register_backbone"]
