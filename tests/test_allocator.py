"""The allocator setting (trustser.allocator): applied by every trustser command, switchable off, and it changes
where memory comes from, never a number computed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TRAIN = """
import hashlib, sys, torch
import torch.nn.functional as F
from trustser.allocator import keep_freed_memory
from trustser.head import EmotionHead
print(keep_freed_memory())
torch.manual_seed(0)
clips = [torch.randn(3, t, 64) for t in (40, 90, 130, 70)]
head = EmotionHead(3, 64, 4, 16)
head.set_standardization(torch.randn(3, 64) * 0.1, torch.rand(3, 64) + 0.5)
optimiser = torch.optim.Adam(head.parameters(), lr=5e-4)
for _ in range(5):
    loss = F.cross_entropy(head.forward_clips(clips), torch.tensor([0, 1, 2, 3]))
    optimiser.zero_grad(); loss.backward(); optimiser.step()
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in head.parameters())).hexdigest()
print(digest)
"""


def run(env_value: str | None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRUSTSER_MALLOC_TUNING"}
    if env_value is not None:
        env["TRUSTSER_MALLOC_TUNING"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=300, check=True
    ).stdout.split("\n")
    return out[0], out[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keeping_freed_memory_changes_no_trained_weight_and_can_be_switched_off():
    applied, tuned = run(None)
    switched_off, plain = run("0")
    assert applied.startswith("mallopt: mmap threshold 32 MiB")
    assert switched_off == "unchanged (TRUSTSER_MALLOC_TUNING=0)"
    assert tuned == plain  # bit-identical weights after five Adam steps


def test_every_trustser_command_sets_the_allocator(monkeypatch):
    from click.testing import CliRunner

    import trustser.allocator as allocator
    from trustser.cli import main

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or "stub")
    assert CliRunner().invoke(main, ["ls", "--json"]).exit_code == 0
    assert calls == [1]
