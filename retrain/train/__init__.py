"""Training: the top layer, the one training loop and its callbacks, fine-tuning, patient-
metadata fusion, recipes."""
