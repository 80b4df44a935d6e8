"""The model card in words says on which images each choice after training was made, from
what the JSON card records, and whether the validation figures lean optimistic because of it."""

from retrain.card.markdown import model_card_markdown
from tests.conftest import as_card

FIGURES = {"count": 40, "accuracy": {"value": 0.8, "interval": [0.65, 0.9]},
           "auc": {label: {"auc": 0.9, "interval": [0.8, 1.0], "positives": 10} for label in ("a", "b", "c")}}
POINT = {"label": "a", "target": "sensitivity", "value": 0.9, "threshold": 0.2, "sensitivity": 0.9,
         "specificity": 0.5, "positives": 10, "negatives": 30, "chosen_on": "/data/tune"}
CALIBRATION = {"temperature": 1.2, "ece_before": 0.1, "ece_after": 0.08, "nll_before": 0.6, "nll_after": 0.55,
               "count": 40, "chosen_on": "validation", "ece_floor": 0.07}


def _card(**extra):
    return as_card({"labels": ["a", "b", "c"], "validation_figures": FIGURES, "calibration": CALIBRATION,
                    "operating_points": [POINT], **extra})


def test_early_stopping_fine_tuning_and_a_validation_temperature_are_named_as_chosen_on_validation():
    words = model_card_markdown(_card(top_layer={"steps": 300, "kept_step": 120, "early_stopping_metric": "auc"},
                                      fine_tuning={"epochs": 12, "kept_epoch": 10}))
    assert "- the top layer's step: step 120 of 300, the best by validation auc (early stopping)" in words
    assert "- fine-tuning's epoch: epoch 10 of 12, the best on the validation images" in words
    assert "- the temperature: on the validation images (40 images)" in words
    assert "- the threshold for a (for sensitivity 0.9): on the images of /data/tune" in words
    assert ("The top layer's step, fine-tuning's epoch and temperature were chosen on these same images, so these "
            "figures lean a little optimistic") in words


def test_without_early_stopping_nothing_that_shapes_the_figures_is_said_to_be_chosen_on_validation():
    words = model_card_markdown(_card(top_layer={"steps": 300, "kept_step": 299, "early_stopping_metric": None},
                                      labels=["a", "b"]))
    assert "- the top layer's step: the last, step 299 (no early stopping)" in words
    assert "Nothing that shapes these figures was chosen on these images." in words
    assert "## Test-split figures\n\nNot recorded." in words


def test_an_old_card_does_not_claim_that_nothing_was_chosen_on_validation():
    words = model_card_markdown(_card())
    assert "- the top layer's step: not recorded" in words
    assert "Not every choice was recorded, so these figures may lean optimistic" in words


def test_an_int8_card_whose_score_is_unusable_says_it_has_no_check_though_the_float_threshold_is_still_held():
    import dataclasses

    ood = {"output_name": "ood_score", "threshold": 3.0, "hard_threshold": 5.25, "flagged_share": 0.05,
           "chosen_on": "validation", "count": 40}
    card = _card(ood=ood)
    assert "- It has no check for images unlike its training images." not in model_card_markdown(card)
    int8 = card.replace(ood=dataclasses.replace(card.ood, unavailable="int8 clips the score"), quantization="int8")
    assert "- It has no check for images unlike its training images." in model_card_markdown(int8)
