"""The bench's synthetic text: word counts of a Zipf(1) law, the shape of
real text (what the embedding scatter and the class softmax see)."""
from __future__ import annotations

import numpy as np


def zipf_counts(V: int, total: int = 10**7) -> np.ndarray:
    """Expected counts of a Zipf(1) law over V words, descending like a vocabulary's."""
    return np.maximum(1, np.round(total / np.arange(1, V + 1) / np.log(V + 1))).astype(np.int64)
