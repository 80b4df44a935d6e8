"""The out-of-distribution score on generated features: its threshold flags the share it was
set for, far features are flagged, and the few-images path scores as the full covariance does."""

import numpy as np
import pytest

from retrain.decisions.ood import fit_ood, out_of_fold_scores


def test_the_ood_threshold_flags_five_percent_of_held_out_images_and_far_features_are_flagged():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 3, (3, 40))
    true = rng.integers(0, 3, 900)
    training = centres[true] + rng.normal(size=(900, 40))
    held = centres[rng.integers(0, 3, 200)] + rng.normal(size=(200, 40))
    detector = fit_ood(training, true, 3)
    detector = detector.with_threshold(detector.scores(held), "validation")
    assert detector.flagged_share == pytest.approx(0.05, abs=0.01)
    far = rng.normal(0, 1, (50, 40)) * 4 + 10
    assert (detector.scores(far) > detector.threshold).all()
    assert np.median(detector.scores(held)) == pytest.approx(1.0, rel=0.3)  # typical images score about 1
    assert (detector.scores(far) > detector.hard_threshold).all()


@pytest.mark.parametrize("images", [30, 300])  # the SVD path (fewer images than features) and the Cholesky one
def test_the_detector_scores_as_the_shrunk_covariance_written_directly_does(images):
    """Either path is the Ledoit-Wolf whitening, written here directly."""
    rng = np.random.default_rng(3)
    features, true = rng.normal(size=(images, 64)) + rng.normal(size=64), np.arange(images) % 2
    detector = fit_ood(features, true, 2)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    means = np.stack([unit[true == c].mean(axis=0) for c in range(2)])
    centred = unit - means[true]
    sample = centred.T @ centred / images
    mu = np.trace(sample) / 64
    spread = sum(((np.outer(x, x) - sample) ** 2).sum() for x in centred) / images ** 2
    shrinkage = min(1.0, spread / ((sample - mu * np.eye(64)) ** 2).sum())
    precision = np.linalg.inv(shrinkage * mu * np.eye(64) + (1 - shrinkage) * sample)
    probe = rng.normal(size=(5, 64))
    probe_unit = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    expected = np.min([np.einsum("nf,fg,ng->n", probe_unit - m, precision, probe_unit - m) for m in means], axis=0) / 64
    np.testing.assert_allclose(detector.scores(probe), expected, rtol=1e-4)


@pytest.mark.parametrize("images", [30, 400])  # fewer and more images than features: both paths
def test_the_detector_fitted_block_by_block_matches_the_one_fitted_in_one_block(monkeypatch, images):
    from retrain.decisions import ood

    rng = np.random.default_rng(5)
    features = np.abs(rng.normal(size=(images, 64)) + rng.normal(size=64)).astype(np.float32)
    true = rng.integers(0, 3, images)
    whole = fit_ood(features, true, 3)
    monkeypatch.setattr(ood, "BLOCK_ROWS", 7)
    blocks = fit_ood(features, true, 3)
    scale = np.abs(whole.projection).max()
    np.testing.assert_allclose(blocks.projection, whole.projection, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(blocks.scores(features), whole.scores(features), rtol=1e-5)


def test_fitting_and_scoring_make_no_float64_copy_of_the_feature_matrix():
    import tracemalloc

    rng = np.random.default_rng(6)
    features = rng.random((100000, 128), dtype=np.float32)  # 51 MB; a float64 copy would be 102
    true = rng.integers(0, 3, len(features))
    tracemalloc.start()
    try:
        fit_ood(features, true, 3).scores(features)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < features.nbytes / 2  # blocks of rows, whatever the count


def test_out_of_fold_scores_put_the_threshold_where_five_percent_of_new_images_of_the_same_source_score_above():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 1, (2, 200))
    true = np.arange(160) % 2
    training = centres[true] + rng.normal(size=(160, 200))
    new = centres[np.arange(4000) % 2] + rng.normal(size=(4000, 200))
    detector = fit_ood(training, true, 2)
    detector = detector.with_threshold(out_of_fold_scores(training, true, 2, seed=0), "out-of-fold training")
    assert 0.01 < (detector.scores(new) > detector.threshold).mean() < 0.07  # in-sample scores give 0.09
