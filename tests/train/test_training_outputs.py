"""What a training run leaves besides the model: TensorBoard scalars, intermediate graphs,
the training-curves PNG; and the recipe flag."""

import pytest
from click.testing import CliRunner

from retrain.cli import retrain


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import write_colour_tree

    root = tmp_path_factory.mktemp("outputs")
    write_colour_tree(root / "images", {"red": 10, "blue": 10})
    (root / "summaries").mkdir()
    (root / "summaries" / "keep_me.txt").write_text("the user's own file")
    args = [
        "--image_dir", root / "images", "--output_graph", root / "out" / "g.pb", "--output_labels", root / "out" / "l.txt",
        "--bottleneck_dir", root / "bn", "--summaries_dir", root / "summaries", "--how_many_training_steps", "45",
        "--intermediate_output_graphs_dir", root / "intermediate", "--intermediate_store_frequency", "20",
        "--validation_percentage", "30", "--recipe", "strong", "--early_stopping_patience", "0", "--random_seed", "1",
    ]
    result = CliRunner().invoke(retrain, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return root, result


def test_summaries_go_to_a_new_run_folder_with_accuracy_and_auc(run):
    import tensorflow as tf

    root, _ = run
    assert (root / "summaries" / "keep_me.txt").read_text() == "the user's own file"
    (run_dir,) = [p for p in (root / "summaries").iterdir() if p.is_dir()]
    tags = set()
    for event_file in run_dir.rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {(event_file.parent.name, value.tag) for value in event.summary.value}
    assert {("train", "accuracy"), ("train", "cross_entropy"), ("validation", "auc"), ("validation", "accuracy")} <= tags


def test_intermediate_graphs_are_written_at_the_store_frequency(run):
    root, _ = run
    assert sorted(p.name for p in (root / "intermediate").iterdir()) == ["intermediate_20.pb", "intermediate_40.pb"]


def test_training_curves_png_is_written_beside_the_graph(run):
    root, result = run
    assert (root / "out" / "g.training.png").read_bytes()[:4] == b"\x89PNG"


def test_explicit_flags_win_over_the_recipe(run):
    _, result = run
    assert "Early stopping" not in result.output  # strong's early stopping was turned off explicitly
    assert "Step 44:" in result.output
