"""MORSE learns: on synthetic shapes with thin structures, a fixed small budget reaches a
rendered boundary accuracy we assert, measured beside the plain backbone (renderer off, the
same data, budget, loop and seed) trained in the same test.

One seed on one machine: the comparison guards against a renderer that makes the boundary
worse, it is not evidence that MORSE helps (that needs seeds: see docs/explanation/results.md).
"""

import numpy as np
import pytest
import torch

from morse import Morse, MorseLoss
from morse.backbone import UNet

SIZE, CLASSES, STEPS, BATCH = 64, 3, 160, 8

#: Rendered boundary accuracy MORSE must reach on the test shapes.
MORSE_MIN_BOUNDARY_ACCURACY = 0.90
#: How far below the plain backbone's boundary accuracy MORSE may fall on one seed.
PLAIN_TOLERANCE = 0.01


def make_shapes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Discs (class 1) crossed by thin 1-2 pixel lines (class 2) on noisy backgrounds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, labels = [], []
    for _ in range(count):
        label = np.zeros((SIZE, SIZE), np.int64)
        cy, cx, r = rng.uniform(18, 46, 2).tolist() + [rng.uniform(8, 16)]
        label[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
        for _ in range(2):
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-20, 20)
            width = rng.uniform(0.6, 1.2)
            distance = np.abs((yy - 32) * np.cos(angle) - (xx - 32) * np.sin(angle) - offset)
            label[distance < width] = 2
        intensity = np.array([0.0, 1.0, 2.0])[label] + rng.normal(0, 0.35, label.shape)
        images.append(intensity.astype(np.float32))
        labels.append(label)
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))[:, None]


def boundary_band(labels: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) bool: pixels within 1 pixel of a label change."""
    padded = torch.nn.functional.pad(labels.float(), (1, 1, 1, 1), mode="replicate")
    high = torch.nn.functional.max_pool2d(padded, 3, 1)
    low = -torch.nn.functional.max_pool2d(-padded, 3, 1)
    return high != low


def train_and_score(renderer: bool) -> float:
    torch.manual_seed(0)
    images, labels = make_shapes(64, seed=0)
    test_images, test_labels = make_shapes(16, seed=1)
    model = Morse(UNet(2, 1, CLASSES, width=0.25), CLASSES, 2, renderer=renderer,
                  train_points=512, render_points=512, expert_width=64, head_width=64)
    loss_fn = MorseLoss(CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        index = torch.randint(0, len(images), (BATCH,), generator=generator)
        loss, _ = loss_fn(model.train()(images[index]), labels[index], step, STEPS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        prediction = model.eval()(test_images).logits.argmax(1, keepdim=True)
    band = boundary_band(test_labels)
    return (prediction == test_labels)[band].float().mean().item()


@pytest.mark.slow
def test_morse_reaches_the_asserted_boundary_accuracy_and_is_not_worse_than_plain():
    morse, plain = train_and_score(renderer=True), train_and_score(renderer=False)
    print(f"boundary accuracy: MORSE {morse:.3f}, plain backbone {plain:.3f}")
    assert morse >= MORSE_MIN_BOUNDARY_ACCURACY
    assert morse >= plain - PLAIN_TOLERANCE
