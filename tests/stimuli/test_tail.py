"""The cut network (stimuli.measures.tail): interventions stacked into one tail call give each one's own
logits, and completeness through the tail gives what the hooked whole network gives."""

import numpy as np
import torch
from torch import nn

from stimuli.measures import tail


class _Residual(nn.Module):
    """A stem, one residual block and a classifier: a cut inside the block carries the skip value."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.relu(self.conv2(self.relu(self.conv1(s))) + s))


def _model():
    torch.manual_seed(0)
    return _Residual().eval()


def test_stacked_tails_give_each_intervention_its_own_logits():
    model = _model()
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    split = tail.split_at(model, "conv1")
    assert split is not None and split.n_carried == 1  # the skip value travels with the cut
    with torch.inference_mode():
        t, *carried = split.head(x)
        changed = [t * s for s in (0.0, 0.5, 1.0, 2.0, -1.0)]
        alone = [split.tail(c, *carried).float() for c in changed]
        # five interventions in groups of two: calls of 12, 12 and 6 rows
        stacked = list(tail.stacked_tails(split, (lambda c=c: c for c in changed), carried, per_call=2))
        assert len(stacked) == 5
        for a, b in zip(alone, stacked):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        # the unchanged layer output gives the whole network's logits
        torch.testing.assert_close(alone[2], model(x).float(), rtol=1e-5, atol=1e-6)


def test_stack_size_stacks_on_cuda_only():
    assert tail.stack_size(48, 256, torch.device("cuda")) == 5
    assert tail.stack_size(256, 256, torch.device("cuda")) == 1
    assert tail.stack_size(300, 256, torch.device("cuda")) == 1
    assert tail.stack_size(48, 256, torch.device("cpu")) == 1


def test_completeness_through_the_tail_matches_the_hooked_whole_network(monkeypatch):
    from stimuli.activations import extract
    from stimuli.bases import make_basis
    from stimuli.datasets import load_dataset
    from stimuli.measures.completeness import network_completeness

    model = _model()
    images = load_dataset("digits", max_images=40, seed=0)

    def preprocess(image):
        a = np.asarray(image.convert("RGB").resize((12, 12)), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)

    A = extract(model, images, preprocess, ["conv1"], batch_size=16).values["conv1"]
    basis = make_basis("pca", random_state=0).fit(A)
    cut = network_completeness(model, images, preprocess, "conv1", basis, [1, 2, 8], batch_size=16)
    # where no cut can be made, each projection re-runs the whole network through the layer's hook
    monkeypatch.setattr(tail, "split_at", lambda model, layer: None)
    hooked = network_completeness(model, images, preprocess, "conv1", basis, [1, 2, 8], batch_size=16)
    assert cut["k"] == hooked["k"] == [1, 2, 8]
    for key in ("accuracy", "accuracy_reverse", "baseline_accuracy", "n_images", "n_forward_passes"):
        assert cut[key] == hooked[key], key
    np.testing.assert_allclose(cut["kl"], hooked["kl"], atol=1e-5)
    np.testing.assert_allclose(cut["kl_reverse"], hooked["kl_reverse"], atol=1e-5)
    # the projections do change the decision: the test compares something
    assert cut["kl"][0] > 0
