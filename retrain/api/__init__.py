"""retrain from Python: one call per command, the same the command line makes.

    from pathlib import Path
    from retrain.api import DataConfig, RetrainConfig, evaluate, load, train

    result = train(RetrainConfig(DataConfig(Path("~/lesions").expanduser())))
    print(result.labels, result.test_accuracy, result.files.graph)
    classifier = load(result.files.graph)  # read once, called for each image or batch
    print(classifier(Path("mole.jpg")).predictions[0], [c.decisions for c in classifier([Path("a.jpg"), Path("b.jpg")])])
    print(evaluate([result.files.graph], Path("~/held_out").expanduser()).metrics)

A user's mistake raises `UserError`, whose message is the line the command prints, with the
parameter (`classify.image`, `TrainingConfig.steps`) where the command names its flag.
"""

from retrain.api.classification import classify, load
from retrain.api.config import (
    BackboneChoice,
    DataConfig,
    DecisionConfig,
    ExportConfig,
    FeatureConfig,
    MonitorConfig,
    PatientConfig,
    RetrainConfig,
    TestConfig,
    TFLiteConfig,
    recipe,
    with_recipe,
)
from retrain.api.ensembling import EnsembleConfig, EnsembleResult, ensemble
from retrain.api.evaluation import Evaluation, EvaluationOutputs, evaluate
from retrain.api.operating_point import OperatingPointUpdate, set_operating_point
from retrain.api.training import RetrainResult, train
from retrain.data.augmentation import CopyAugmentation, EpochAugmentation
from retrain.errors import UserError
from retrain.predict.classification import Classification
from retrain.predict.classifier import Classifier, StockModel
from retrain.predict.heatmaps import HeatmapRequest
from retrain.predict.loaded_model import FeedOverrides
from retrain.reporter import Reporter
from retrain.train.fine_tuning import FineTuneConfig
from retrain.train.top_layer import ClassWeights, TrainingConfig

__all__ = [
    "BackboneChoice", "ClassWeights", "CopyAugmentation", "DataConfig", "DecisionConfig", "EpochAugmentation", "ExportConfig",
    "FeatureConfig", "FineTuneConfig", "MonitorConfig", "PatientConfig", "Reporter", "RetrainConfig", "RetrainResult",
    "TFLiteConfig", "TestConfig", "TrainingConfig", "UserError", "train", "Classification", "Classifier", "FeedOverrides",
    "HeatmapRequest", "StockModel", "classify", "load", "Evaluation", "EvaluationOutputs", "evaluate",
    "OperatingPointUpdate", "set_operating_point", "recipe", "with_recipe", "web_app", "EnsembleConfig",
    "EnsembleResult", "ensemble",
]


def __getattr__(name: str):
    """`web_app` (retrain.api.web) imported when first asked for: the other calls never load Starlette."""
    if name == "web_app":
        from retrain.api.web import web_app

        return web_app
    raise AttributeError(f"module 'retrain.api' has no attribute {name!r}")
