import numpy as np
import pytest

from retrain.train.callbacks import IntermediateGraphs
from retrain.train.learner import Callback
from retrain.train.top_layer import TrainingConfig, accuracy, train_top_layer


class _Recorder(Callback):
    """Keeps every StepReport the loop validates."""

    def __init__(self, reports: list):
        self.reports = reports

    def on_period_end(self, result, state) -> None:
        self.reports.append(result)


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
    head = train_top_layer(x, y, x[:20], y[:20], 3, config, callbacks=[_Recorder(reports)])
    assert accuracy(head.probabilities(x), y) > 0.95
    assert [r.step for r in reports] == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 94]
    assert reports[-1].cross_entropy < reports[0].cross_entropy
    assert reports[-1].validation_count == 20  # the default batch of 100 draws each of the 20 once


def test_the_same_seed_gives_the_same_weights():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    config = TrainingConfig(steps=50, random_seed=7)
    a = train_top_layer(x, y, x, y, 3, config)
    b = train_top_layer(x, y, x, y, 3, config)
    np.testing.assert_array_equal(a.weights, b.weights)
    c = train_top_layer(x, y, x, y, 3, TrainingConfig(steps=50, random_seed=8))
    assert not np.array_equal(a.weights, c.weights)


def test_validation_batch_of_minus_one_uses_the_whole_set():
    rng = np.random.default_rng(0)
    x, y = _blobs(rng)
    reports = []
    train_top_layer(x, y, x[:7], y[:7], 3, TrainingConfig(steps=1, validation_batch_size=-1), callbacks=[_Recorder(reports)])
    assert reports[0].validation_count == 7


def _overlapping_blobs(seed=0, n=200, features=32):
    """Two classes that overlap, so regularisation and early stopping have something to do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, features)) + (y[:, None] * 0.6)
    return x.astype(np.float32), y


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "momentum"},
        {"optimizer": "adam", "learning_rate": 0.01},
        {"weight_decay": 0.1},
        {"dropout": 0.5},
        {"label_smoothing": 0.2},
        {"learning_rate_schedule": "cosine"},
    ],
    ids=lambda o: ",".join(o),
)
def test_each_head_option_still_learns_and_changes_the_weights(options):
    x, y = _overlapping_blobs()
    plain = train_top_layer(x, y, x, y, 2, TrainingConfig(steps=300, learning_rate=0.1, random_seed=0))
    varied = train_top_layer(x, y, x, y, 2, TrainingConfig(**{"steps": 300, "learning_rate": 0.1, "random_seed": 0, **options}))
    assert accuracy(varied.probabilities(x), y) > 0.75
    assert not np.allclose(plain.weights, varied.weights)


def _sigmoid(z: float) -> float:
    return 1 / (1 + np.exp(-z))


# One example of class 0 with one feature, x = 2; two classes; weights and bias start at zero;
# learning rate 0.1. The softmax's gradient is p - (1, 0); with p = (1 - q, q), q = sigmoid(logit1 - logit0),
# it is (-q, q) for the bias and x * (-q, q) for the weights. Step 1: q = 1/2.
MOMENTUM_STEPS = {  # m = 0.9 m + g; p -= 0.1 m
    # step 1: g_w = (-1, 1), g_b = (-0.5, 0.5) -> w0 = 0.1, b0 = 0.05; logits +-(2 * 0.1 + 0.05) = +-0.25
    # step 2: q = sigmoid(-0.5); w0 = 0.1 + 0.1 * (0.9 * 1 + 2q), b0 = 0.05 + 0.1 * (0.9 * 0.5 + q)
    "weights": 0.1 + 0.1 * (0.9 + 2 * _sigmoid(-0.5)),  # 0.265508
    "bias": 0.05 + 0.1 * (0.45 + _sigmoid(-0.5)),  # 0.132754
}


def _adam_second_step(g1: float, g2: float) -> float:
    """The second Adam step (0.9, 0.999, eps 1e-7, bias-corrected) after gradients g1 then g2, by hand."""
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    return 0.1 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-7)


ADAM_STEPS = {
    # step 1: the bias-corrected step is 0.1 * g / |g| whatever g's size: w0 = b0 = 0.1; logits +-0.3
    # step 2: q = sigmoid(-0.6): gradients 2q for the weight, q for the bias
    "weights": 0.1 * 1 / (1 + 1e-7) + _adam_second_step(1.0, 2 * _sigmoid(-0.6)),  # 0.197701
    "bias": 0.1 * 0.5 / (0.5 + 1e-7) + _adam_second_step(0.5, _sigmoid(-0.6)),  # 0.197701
}


@pytest.mark.parametrize("kind, expected", [("momentum", MOMENTUM_STEPS), ("adam", ADAM_STEPS)])
def test_momentum_and_adam_take_the_two_steps_worked_by_hand(kind, expected):
    from retrain.train.top_layer import _Optimizer, softmax

    x, label = np.array([[2.0]], np.float32), 0
    weights, bias = np.zeros((1, 2), np.float32), np.zeros(2, np.float32)
    optimizer = _Optimizer(kind)
    for _ in range(2):
        gradient = softmax(x @ weights + bias) - np.eye(2, dtype=np.float32)[[label]]
        optimizer.apply([weights, bias], [x.T @ gradient, gradient.sum(axis=0)], 0.1)
    np.testing.assert_allclose(weights, [[expected["weights"], -expected["weights"]]], rtol=1e-5)
    np.testing.assert_allclose(bias, [expected["bias"], -expected["bias"]], rtol=1e-5)


# train_top_layer on one example of class 0 whose one feature is 0: the weights get no gradient and the
# logits are the bias alone, which starts at zero, so every step can be worked by hand. With
# b = (b0, -b0) the bias gradient is (-q, q), q = sigmoid(-2 b0).
@pytest.mark.parametrize("options, rates, b0", [
    ({"optimizer": "sgd"}, [0.1, 0.1], 0.05 + 0.1 * _sigmoid(-0.1)),  # 0.097502
    ({"optimizer": "momentum"}, [0.1, 0.1], 0.05 + 0.1 * (0.9 * 0.5 + _sigmoid(-0.1))),  # 0.142502
    ({"optimizer": "adam"}, [0.1, 0.1], 0.1 * 0.5 / (0.5 + 1e-7) + _adam_second_step(0.5, _sigmoid(-0.2))),  # 0.199590
    # cosine over 4 steps: 0.1 * (1 + cos(pi * step / 3)) / 2 = 0.1, 0.075, 0.025, 0
    ({"learning_rate_schedule": "cosine"}, [0.1, 0.075, 0.025, 0.0],
     0.05 + 0.075 * _sigmoid(-0.1) + 0.025 * _sigmoid(-2 * (0.05 + 0.075 * _sigmoid(-0.1)))),  # 0.097059
], ids=["sgd", "momentum", "adam", "cosine"])
def test_train_top_layer_steps_the_bias_as_worked_by_hand(options, rates, b0):
    reports = []
    config = TrainingConfig(steps=len(rates), learning_rate=0.1, train_batch_size=1, eval_step_interval=1,
                            random_seed=0, **options)
    layer = train_top_layer(np.zeros((1, 1), np.float32), np.array([0]), np.zeros((0, 1), np.float32),
                            np.zeros(0, np.int64), 2, config, callbacks=[_Recorder(reports)])
    np.testing.assert_allclose([r.learning_rate for r in reports], rates, atol=1e-12)
    np.testing.assert_allclose(layer.bias, [b0, -b0], rtol=1e-5)


def test_weight_decay_shrinks_the_weights():
    x, y = _overlapping_blobs()
    plain = train_top_layer(x, y, x, y, 2, TrainingConfig(steps=300, learning_rate=0.1, random_seed=0))
    decayed = train_top_layer(x, y, x, y, 2, TrainingConfig(steps=300, learning_rate=0.1, weight_decay=0.5, random_seed=0))
    assert np.linalg.norm(decayed.weights) < 0.8 * np.linalg.norm(plain.weights)


def test_label_smoothing_keeps_probabilities_away_from_certainty():
    x, y = _blobs(np.random.default_rng(0))
    sharp = train_top_layer(x, y, x, y, 3, TrainingConfig(steps=500, learning_rate=0.5, random_seed=0))
    smooth = train_top_layer(x, y, x, y, 3, TrainingConfig(steps=500, learning_rate=0.5, label_smoothing=0.3, random_seed=0))
    assert smooth.probabilities(x).max() < sharp.probabilities(x).max()


def test_early_stopping_keeps_the_best_evaluated_step_and_stops_early():
    x, y = _overlapping_blobs(n=120, features=200)  # many features, few examples: overfits
    val_x, val_y = _overlapping_blobs(seed=1, n=200, features=200)
    reports = []
    config = TrainingConfig(steps=3000, learning_rate=0.5, eval_step_interval=10, early_stopping_patience=5, random_seed=0)
    head = train_top_layer(x, y, val_x, val_y, 2, config, callbacks=[_Recorder(reports)])
    assert head.step is not None
    assert reports[-1].step < 2999  # stopped before the end
    best = max(reports, key=lambda r: r.validation_auc)
    assert head.step == best.step
    from retrain.train.top_layer import mean_auc

    assert mean_auc(head.probabilities(val_x), val_y) == pytest.approx(best.validation_auc)


def test_snapshots_are_taken_at_the_requested_interval():
    x, y = _blobs(np.random.default_rng(0))
    taken = []
    train_top_layer(x, y, x, y, 3, TrainingConfig(steps=50), callbacks=[IntermediateGraphs(20, lambda step, layer: taken.append(step))])
    assert taken == [20, 40]


@pytest.mark.parametrize("bad", [{"optimizer": "rmsprop"}, {"dropout": 1.0}, {"label_smoothing": -0.1}])
def test_impossible_options_are_user_errors(bad):
    from retrain.errors import UserError

    x, y = _blobs(np.random.default_rng(0))
    with pytest.raises(UserError):
        train_top_layer(x, y, x, y, 3, TrainingConfig(steps=5, **bad))


def test_the_top_layer_stops_at_the_step_whose_update_overflows():
    from retrain.errors import UserError

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 8)).astype(np.float32) * 1e3, np.arange(20) % 2
    with pytest.raises(UserError, match=r"^training diverged at step \d+: the loss became NaN or infinite"):
        train_top_layer(x, y, x[:0], y[:0], 2, TrainingConfig(steps=50, learning_rate=1e38, train_batch_size=4,
                                                              random_seed=0))


def test_a_large_validation_set_is_scored_on_a_fixed_sample_during_training_and_the_weights_do_not_change():
    from retrain.train.top_layer import EVALUATION_SAMPLE, mean_auc

    rng = np.random.default_rng(3)
    x, y = _blobs(rng)
    val_x, val_y = _blobs(rng, n_per_class=EVALUATION_SAMPLE // 2 + 100)
    config = TrainingConfig(steps=25, learning_rate=0.1, train_batch_size=30, random_seed=1)
    large, small = [], []
    head = train_top_layer(x, y, val_x, val_y, 3, config, callbacks=[_Recorder(large)])
    alone = train_top_layer(x, y, val_x[:50], val_y[:50], 3, config, callbacks=[_Recorder(small)])
    assert np.array_equal(head.weights, alone.weights)
    assert {r.figures_count for r in large} == {EVALUATION_SAMPLE} and {r.figures_count for r in small} == {50}
    assert large[-1].validation_auc != mean_auc(head.probabilities(val_x), val_y)  # a sample, not the whole set
    assert abs(large[-1].validation_auc - mean_auc(head.probabilities(val_x), val_y)) < 0.02


def test_early_stopping_scores_a_large_validation_set_whole():
    from retrain.train.top_layer import EVALUATION_SAMPLE

    rng = np.random.default_rng(4)
    x, y = _blobs(rng)
    val_x, val_y = _blobs(rng, n_per_class=EVALUATION_SAMPLE // 2 + 100)
    reports = []
    config = TrainingConfig(steps=15, learning_rate=0.1, train_batch_size=30, random_seed=1, early_stopping_patience=50)
    train_top_layer(x, y, val_x, val_y, 3, config, callbacks=[_Recorder(reports)])
    assert {r.figures_count for r in reports} == {len(val_y)}
