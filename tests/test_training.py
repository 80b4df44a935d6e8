import numpy as np

from retrain.training import TrainingConfig, accuracy, train_head


def _blobs(rng, n_per_class=40, features=16, classes=3):
    centres = rng.normal(0, 3, size=(classes, features))
    x = np.concatenate([centres[c] + rng.normal(0, 1, size=(n_per_class, features)) for c in range(classes)])
    y = np.repeat(np.arange(classes), n_per_class)
    return x.astype(np.float32), y


def test_learns_separable_classes_and_reports_at_each_interval_and_the_last_step():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    reports = []
    config = TrainingConfig(steps=95, learning_rate=0.1, train_batch_size=30, eval_step_interval=10, random_seed=1)
    head = train_head(x, y, x[:20], y[:20], 3, config, report=reports.append)
    assert accuracy(head.probabilities(x), y) > 0.95
    assert [r.step for r in reports] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 94]
    assert reports[-1].cross_entropy < reports[0].cross_entropy
    assert reports[-1].validation_count == 100


def test_the_same_seed_gives_the_same_weights():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    config = TrainingConfig(steps=50, random_seed=7)
    a = train_head(x, y, x, y, 3, config)
    b = train_head(x, y, x, y, 3, config)
    np.testing.assert_array_equal(a.weights, b.weights)
    c = train_head(x, y, x, y, 3, TrainingConfig(steps=50, random_seed=8))
    assert not np.array_equal(a.weights, c.weights)


def test_validation_batch_of_minus_one_uses_the_whole_set():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    reports = []
    train_head(x, y, x[:7], y[:7], 3, TrainingConfig(steps=1, validation_batch_size=-1), report=reports.append)
    assert reports[0].validation_count == 7
