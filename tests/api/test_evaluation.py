"""retrain.api.evaluate: the call the evaluate command makes, used directly from Python."""

from __future__ import annotations

import json

import pytest

from retrain.api import EvaluationOutputs, evaluate
from retrain.cli import evaluate as evaluate_command
from retrain.cli.fields import in_flags
from retrain.errors import UserError
from retrain.predict import prediction
from retrain.reporter import Reporter
from tests.conftest import SQUARE_COLOURS, run_cli, square_image


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_evaluate")
    for index, name in enumerate(SQUARE_COLOURS):
        (root / name).mkdir()
        for i in range(3):
            square_image(SQUARE_COLOURS[name], seed=7000 + 10 * index + i)[0].save(root / name / f"{i}.png")
    return root


def test_evaluate_returns_the_figures_and_lines_of_the_evaluate_command(square_model, held_out, tmp_path):
    lines, warnings = [], []
    result = evaluate([square_model / "graph.pb"], held_out, reporter=Reporter(log=lines.append, warn=warnings.append))
    written = tmp_path / "metrics.json"
    printed = run_cli(evaluate_command, ["--graph", square_model / "graph.pb", "--image_dir", held_out, "--json", written])
    assert printed.exit_code == 0, printed.output
    assert json.loads(json.dumps(result.as_json())) == json.loads(written.read_text())
    assert result.metrics[str(square_model / "graph.pb")]["n"] == 9
    assert "\n".join(lines + [f"Wrote {written}"]) == printed.stdout.rstrip("\n")
    assert warnings == []


def test_evaluate_writes_the_outputs_asked_for(square_model, held_out, tmp_path):
    lines = []
    outputs = EvaluationOutputs(json=tmp_path / "m.json", plot=tmp_path / "roc", predictions=tmp_path / "p.csv")
    evaluate([square_model / "graph.pb"], held_out, outputs=outputs, reporter=Reporter(log=lines.append))
    assert (tmp_path / "roc.png").is_file() and (tmp_path / "m.json").is_file()
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 10
    assert lines[-3:] == [f"Wrote ROC curves to {tmp_path / 'roc.png'}", f"Wrote {tmp_path / 'm.json'}",
                          f"Wrote {tmp_path / 'p.csv'}"]


def test_evaluate_reads_each_model_once(square_model, held_out, monkeypatch):
    loads = []
    real = prediction.load_model
    monkeypatch.setattr(prediction, "load_model", lambda *args: loads.append(args[0]) or real(*args))
    evaluate([square_model / "graph.pb", square_model / "saved_model"], held_out, reporter=Reporter(log=lambda _: None))
    assert loads == [square_model / "graph.pb", square_model / "saved_model"]


def test_a_mistake_raises_user_error_naming_the_parameters_evaluate_names_by_their_flags(square_model, held_out):
    graph, labels = square_model / "graph.pb", square_model / "labels.txt"
    with pytest.raises(UserError) as raised:
        evaluate([graph, graph], held_out, labels=[labels])
    assert str(raised.value) == ("give one evaluate.labels per evaluate.graphs, or none to use the labels stored in "
                                 "the models")
    printed = run_cli(evaluate_command, ["--graph", graph, "--graph", graph, "--labels", labels, "--image_dir", held_out])
    assert printed.exit_code == 1 and printed.stdout == ""
    assert printed.stderr.splitlines() == [f"error: {in_flags(str(raised.value))}"]
    assert printed.stderr.splitlines() == ["error: give one --labels per --graph, or none to use the labels stored in "
                                           "the models"]


def test_api_evaluate_given_one_path_says_to_pass_a_list(tmp_path):
    for one in (tmp_path / "model.pb", str(tmp_path / "model.pb")):
        with pytest.raises(TypeError, match=r"graphs: a list of model paths, e.g. \[Path\('model.pb'\)\]"):
            evaluate(one, tmp_path)
