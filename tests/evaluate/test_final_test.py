"""The final test samples TestConfig.batch_size test images without replacement."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from retrain.data.dataset import Split
from retrain.data.sets import Sets
from retrain.evaluate.final_test import final_test
from retrain.features.arrays import Arrays
from retrain.reporter import Reporter


@pytest.mark.parametrize("batch_size, expected", [(20, 20), (50, 20), (7, 7)])
def test_test_batch_size_samples_each_test_image_at_most_once(batch_size, expected):
    seen = []

    def probabilities(x, patient):
        seen.extend(x[:, 0].tolist())
        return np.tile([0.6, 0.4], (len(x), 1))

    test = Arrays(np.arange(20, dtype=np.float32)[:, None], np.arange(20) % 2)
    sets = Sets(["a", "b"], Split([], [], [(Path(f"{i}.jpg"), i % 2) for i in range(20)], []))
    lines = []
    final_test(SimpleNamespace(probabilities=probabilities), test, sets, batch_size, False, 0, Reporter(log=lines.append))
    assert len(seen) == expected and len(set(seen)) == expected
    assert f"(N={expected})" in lines[0]
