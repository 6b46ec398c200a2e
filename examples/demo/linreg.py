"""Helper module imported by demo.ipynb: a tiny linear regression trained by gradient descent."""

from __future__ import annotations

import random


def make_data(n: int, seed: int = 0) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(x, 3.0 * x + 0.5 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(n))]


def train(data: list[tuple[float, float]], epochs: int, lr: float) -> tuple[float, float, float]:
    w = b = 0.0
    for _ in range(epochs):
        gw = sum(2 * (w * x + b - y) * x for x, y in data) / len(data)
        gb = sum(2 * (w * x + b - y) for x, y in data) / len(data)
        w, b = w - lr * gw, b - lr * gb
    loss = sum((w * x + b - y) ** 2 for x, y in data) / len(data)
    return w, b, loss
