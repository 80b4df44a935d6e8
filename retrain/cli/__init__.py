"""Command-line entry points, one module per command; each parses flags, calls the
library (retrain.api) and prints. Flags keep tensorflow-for-poets' underscore spellings
(`--image_dir=...`), and the dashed spellings work too."""

from retrain.cli.ensemble_command import ensemble
from retrain.cli.evaluate_command import evaluate
from retrain.cli.export_tflite_command import export_tflite
from retrain.cli.label_image_command import label_image
from retrain.cli.prepare_isic_command import prepare_isic
from retrain.cli.retrain_command import retrain
from retrain.cli.serve_command import serve
from retrain.cli.set_operating_point_command import set_operating_point

__all__ = ["ensemble", "evaluate", "export_tflite", "label_image", "prepare_isic", "retrain", "serve", "set_operating_point"]
