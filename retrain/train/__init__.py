"""Training: the top layer, the one training loop and its callbacks, fine-tuning, patient-
metadata fusion (the recipes, presets over several stages' configs, are retrain.api.config's)."""
