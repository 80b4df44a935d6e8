"""The field-flag table (retrain.cli.fields): every flag of every command is in it, each library
name stands for one flag, and the CLI's printed lines name flags where the library names fields."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import click
import pytest

from retrain.cli import fields
from retrain.cli.fields import FIELDS, Field, in_flags
from retrain.cli.reference import COMMANDS
from retrain.train.top_layer import TrainingConfig

# The functions whose parameters the commands without a config set, by the owner the table gives.
API_CALLS = {
    "load": "retrain.api.classification:load",
    "classify": "retrain.api.classification:classify",
    "Classifier": "retrain.predict.classifier:Classifier.__call__",
    "evaluate": "retrain.api.evaluation:evaluate",
    "set_operating_point": "retrain.api.operating_point:set_operating_point",
    "web_app": "retrain.api.web:web_app",
    "prepare_isic": "retrain.data.isic:prepare_isic",
    "export_tflite": "retrain.cli.export_tflite_command:export_tflite.callback",  # the command is the export's one call
}
# Flags that set nothing in the library: an action or a way of printing of the command itself.
COMMAND_ONLY = {"retrain.list_architectures", "label_image.as_json", "serve.host", "serve.port"}


def _command_fields(command: click.Command) -> dict[str, Field]:
    return sys.modules[command.callback.__module__].FIELDS


def _flags(command: click.Command) -> list[str]:
    return [param.opts[0][2:] for param in command.params
            if isinstance(param, click.Option) and param.opts[0] != "--help"]


@pytest.mark.parametrize("name,command", COMMANDS)
def test_every_flag_of_every_command_is_in_the_table(name, command):
    table = _command_fields(command)
    registered = {(f.flag, f.token) for f in FIELDS}
    for flag in _flags(command):
        assert flag in table, f"{name} --{flag} is not in its command's table"
        assert (flag, table[flag].token) in registered, f"{name} --{flag} is not registered"


def test_each_token_is_one_flag_and_registered_once():
    tokens = [f.token for f in FIELDS]
    assert len(tokens) == len(set(tokens))


def test_a_token_for_two_flags_is_refused():
    with pytest.raises(ValueError, match="TrainingConfig.steps is both --how_many_training_steps and --steps"):
        fields.register(Field("steps", TrainingConfig, "steps"))
    assert "steps" not in {f.flag for f in FIELDS}


def test_a_config_field_of_the_table_exists_in_its_config():
    with pytest.raises(TypeError, match="TrainingConfig has no field 'stepz'"):
        fields.register(Field("stepz", TrainingConfig, "stepz"))


def test_every_api_parameter_of_the_table_is_a_parameter_of_its_function():
    import importlib

    for entry in FIELDS:
        if not isinstance(entry.owner, str) or entry.token in COMMAND_ONLY:
            continue
        module, function = API_CALLS[entry.owner].split(":")
        target = importlib.import_module(module)
        for attribute in function.split("."):
            target = getattr(target, attribute)
        parameters = inspect.signature(target).parameters
        assert entry.name in parameters, f"{entry.token} (--{entry.flag}) is no parameter of {entry.owner}"


def test_every_config_field_of_the_table_is_a_field_of_its_config():
    for entry in FIELDS:
        if not isinstance(entry.owner, str):
            assert entry.name in {f.name for f in dataclasses.fields(entry.owner)}, entry.token


def test_in_flags_names_the_flag_of_a_config_field():
    assert in_flags("TrainingConfig.steps must be at least 1") == "--how_many_training_steps must be at least 1"
    assert in_flags("DataConfig.image_dir's classes") == "--image_dir's classes"
    assert in_flags("FineTuneConfig.learning_rate and TrainingConfig.learning_rate") == \
        "--fine_tune_learning_rate and --learning_rate"
    assert in_flags("Classifier.patient_metadata age=1") == "--metadata age=1"


def test_in_flags_leaves_module_paths_file_names_and_longer_names_alone():
    assert in_flags("retrain.api.load.path and TrainingConfig.steps_taken") == \
        "retrain.api.load.path and TrainingConfig.steps_taken"
    assert in_flags("Wrote /tmp/EvaluationOutputs.report and C:\\out\\EvaluationOutputs.plot") == \
        "Wrote /tmp/EvaluationOutputs.report and C:\\out\\EvaluationOutputs.plot"


def test_a_config_flag_takes_its_default_from_the_config():
    from retrain.api.config import ExportConfig, TFLiteConfig
    from retrain.cli import export_tflite, retrain
    from retrain.train.fine_tuning import FineTuneConfig

    defaults = {param.name: param.default for param in retrain.params}
    assert defaults["how_many_training_steps"] == TrainingConfig().steps
    assert defaults["output_graph"] == ExportConfig().output_graph
    assert defaults["fine_tune_epochs"] == FineTuneConfig().epochs
    assert defaults["tflite_representative_images"] == TFLiteConfig.__dataclass_fields__["representative_images"].default
    assert {p.name: p.default for p in export_tflite.params}["representative_images"] == \
        defaults["tflite_representative_images"]


def test_every_library_name_of_a_table_owner_in_a_message_is_in_the_table():
    """A message naming `EvaluationOutputs.plot` prints `--plot` only if the table has it: an
    owner's name with a field the table lacks would reach the user as a Python name."""
    import pathlib
    import re

    import retrain

    tokens = {f.token for f in FIELDS}
    owners = {token.split(".")[0] for token in tokens} - {"retrain"}  # "retrain.py's", module paths
    name = re.compile(rf"(?<![\w./\\])(?:{'|'.join(sorted(owners, key=len, reverse=True))})\.\w+(?![\w.(])")
    package = pathlib.Path(retrain.__file__).parent
    unknown = [f"{path.relative_to(package)}:{number}: {match.group(0)}"
               for path in sorted(package.rglob("*.py")) if "cli" not in path.parts
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               for match in name.finditer(line) if match.group(0) not in tokens]
    assert not unknown
