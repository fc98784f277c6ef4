"""``rnnlab.train.allocator``: once malloc is tuned, training steps stop page-faulting.

Each case is a fresh Python process (the tuning is process-wide) that trains an LM-sized
model (10k-word decoder, 700-token windows) and counts its minor page faults.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = """
import resource
import torch
import torch.nn.functional as F
from rnnlab.cells.lstm import LSTMCell
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.train.allocator import tune_malloc

tuned = tune_malloc()
torch.manual_seed(0)
torch.set_num_threads(1)
model = LanguageModel(stack=StackSpec(cell=LSTMCell, hidden_sizes=(64,)), vocab_size=10000)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randint(0, 10000, (35, 20))  # (t, B)

def step():
    logits, _ = model(x)  # (t, B, V): 28 MB of activations, freed after every step
    loss = F.cross_entropy(logits.view(-1, 10000), x.reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(tuning: str) -> tuple[bool, int]:
    env = {**os.environ, "RNNLAB_MALLOC_TUNING": tuning}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_tuned_malloc_keeps_freed_activations_instead_of_faulting_them_in_again():
    tuned, with_tuning = faults("1")
    untuned, without = faults("0")
    assert tuned and not untuned
    # 20 steps: untuned, every step faults its activations in again (thousands of pages)
    assert without > 20 * 1000
    assert with_tuning * 10 < without
