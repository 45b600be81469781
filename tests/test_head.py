"""The head: the method's shapes, layer weights that sum to one, and padding that changes nothing."""

from __future__ import annotations

import torch

from trustser.head import EmotionHead


def test_head_maps_all_layer_hidden_states_to_four_logits():
    head = EmotionHead(num_layers=7, hidden_size=512)
    logits = head(torch.randn(3, 7, 50, 512), torch.ones(3, 50, dtype=torch.bool))
    assert logits.shape == (3, 4)
    assert head.conv1.kernel_size == (1,) and head.conv1.out_channels == 128
    assert head.conv2.in_channels == head.conv2.out_channels == 128
    assert torch.isclose(head.layer_weights().sum(), torch.tensor(1.0))


def test_padding_frames_do_not_change_the_prediction():
    torch.manual_seed(0)
    head = EmotionHead(num_layers=3, hidden_size=16)
    clip = torch.randn(1, 3, 10, 16)
    padded = torch.cat([clip, 100 * torch.randn(1, 3, 5, 16)], dim=2)
    mask = torch.tensor([[True] * 10 + [False] * 5])
    torch.testing.assert_close(head(clip, torch.ones(1, 10, dtype=torch.bool)), head(padded, mask))


def test_last_layer_pooling_ignores_the_other_layers():
    torch.manual_seed(0)
    head = EmotionHead(num_layers=3, hidden_size=8, pooling="last")
    x = torch.randn(2, 3, 4, 8)
    y = x.clone()
    y[:, :2] = 0
    mask = torch.ones(2, 4, dtype=torch.bool)
    torch.testing.assert_close(head(x, mask), head(y, mask))


def test_per_clip_fast_path_equals_the_padded_batch_forward():
    torch.manual_seed(0)
    head = EmotionHead(num_layers=3, hidden_size=8)
    head.layer_logits.data = torch.randn(3)
    clips = [torch.randn(3, n, 8).half() for n in (5, 9, 2)]
    batch = torch.zeros(3, 3, 9, 8)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, c in enumerate(clips):
        batch[i, :, : c.shape[1]] = c.float()
        mask[i, : c.shape[1]] = True
    torch.testing.assert_close(head.forward_clips(clips), head(batch, mask))


def test_a_standardised_heads_fast_path_trains_like_the_padded_batch():
    """The fast path folds the standardisation offset into conv1's bias: same logits, same gradient for every
    parameter (layer weights, conv1's weight and bias included) as the padded forward that subtracts it."""
    torch.manual_seed(0)
    head = EmotionHead(num_layers=3, hidden_size=8)
    head.layer_logits.data = torch.randn(3)
    head.set_standardization(torch.randn(3, 8), torch.rand(3, 8) + 0.5)
    clips = [torch.randn(3, n, 8) for n in (5, 9, 2)]
    batch = torch.zeros(3, 3, 9, 8)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    for i, c in enumerate(clips):
        batch[i, :, : c.shape[1]] = c
        mask[i, : c.shape[1]] = True
    grads = []
    for logits in (lambda: head.forward_clips(clips), lambda: head(batch, mask)):
        head.zero_grad()
        (logits() * torch.arange(12.0).reshape(3, 4)).sum().backward()
        grads.append({n: p.grad.clone() for n, p in head.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
