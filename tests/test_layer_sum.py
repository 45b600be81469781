"""The head's scaled layer sum: the broadcast formulation's numbers and gradients, without its [L, T, H] products."""

from __future__ import annotations

import pytest
import torch

from trustser.layer_sum import scaled_layer_sum


def broadcast_sum(clips: list[torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
    """What the head computed before: one [L, T, H] product per clip, summed over layers, then concatenated."""
    return torch.cat([(c.to(scale.dtype) * scale[:, None, :]).sum(0) for c in clips])


def _clips(lengths=(5, 1, 9), layers=3, hidden=4, dtype=torch.float64, grad=False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(layers, n, hidden, generator=g, dtype=dtype).requires_grad_(grad) for n in lengths]


def test_the_sum_equals_the_broadcast_formulation_row_for_row():
    clips, scale = _clips(), torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(scaled_layer_sum(clips, scale), broadcast_sum(clips, scale))


def test_gradients_match_finite_differences_for_the_scale_and_the_clips_even_an_empty_one():
    scale = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    clips = _clips(lengths=(5, 0, 9), grad=True)
    assert torch.autograd.gradcheck(lambda s, *c: scaled_layer_sum(list(c), s), (scale, *clips))


def test_the_scale_gets_the_broadcast_formulations_gradient_from_frozen_and_strided_features():
    clips = _clips(dtype=torch.float32)
    clips[2] = clips[2].transpose(1, 2).contiguous().transpose(1, 2)  # same values, non-contiguous frames
    scale = torch.randn(3, 4, requires_grad=True)
    weight = torch.randn(15, 4)
    (scaled_layer_sum(clips, scale) * weight).sum().backward()
    ours, scale.grad = scale.grad.clone(), None
    (broadcast_sum(clips, scale) * weight).sum().backward()
    torch.testing.assert_close(ours, scale.grad)


def test_half_precision_features_are_summed_in_the_scales_precision():
    clips = [c.half() for c in _clips(dtype=torch.float32)]
    scale = torch.randn(3, 4)
    out = scaled_layer_sum(clips, scale)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, broadcast_sum(clips, scale))


def test_a_clip_that_does_not_match_the_scale_is_named_by_its_shape():
    with pytest.raises(ValueError, match=r"\(3, 5, 2\)"):
        scaled_layer_sum([torch.zeros(3, 5, 2)], torch.ones(3, 4))
    with pytest.raises(ValueError, match="at least one clip"):
        scaled_layer_sum([], torch.ones(3, 4))
