"""A byte stream cut every way a socket might deliver it, for the framers' split-invariance tests."""

import random


def splits_at(data, cuts):
    cuts = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:])]


def every_split(data, random_splits=30):
    """One cut anywhere, byte by byte, and random multi-cuts."""
    yield [data]
    for cut in range(len(data) + 1):
        yield splits_at(data, [cut])
    yield [data[i:i + 1] for i in range(len(data))]
    rng = random.Random(len(data))
    for _ in range(random_splits):
        yield splits_at(data, rng.sample(range(len(data) + 1), rng.randint(2, 12)))
