"""No output may clobber an input or another output: each collision is one `error:` line
naming both flags, exit status 1, before any slow work, and the input left byte-identical.
The checks run before any model is loaded, so evaluate, label_image and export_tflite are
given stand-in model files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from retrain.cli import evaluate, export_tflite, label_image, retrain
from retrain.errors import UserError
from retrain.outputs import check_outputs
from tests.conftest import run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _refused(command, args, *flags: str, untouched: tuple[Path, ...] = ()) -> str:
    """Run the command, expect one error line naming every flag in `flags`, and the files unchanged."""
    before = [_digest(p) for p in untouched]
    result = run_cli(command, args)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.output
    for flag in flags:
        assert flag in errors[0], errors[0]
    assert "Bottlenecks" not in result.output
    assert [_digest(p) for p in untouched] == before
    return errors[0]


@pytest.fixture
def tree(make_tree):
    return make_tree({"red": 3, "blue": 3})


def _retrain(tree: Path, tmp_path: Path, *extra) -> list:
    return ["--image_dir", tree, "--bottleneck_dir", tmp_path / "bn", "--how_many_training_steps", 10, *extra]


def test_retrain_refuses_an_output_graph_over_a_training_image(tree, tmp_path):
    image = tree / "red" / "red_0.jpg"
    _refused(retrain, _retrain(tree, tmp_path, "--output_graph", image, "--output_labels", tmp_path / "l.txt"),
             "--output_graph", "--image_dir", untouched=(image,))
    assert not (tmp_path / "bn").exists()


def test_retrain_refuses_an_output_inside_an_image_tree(tree, tmp_path):
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tree / "graph.pb",
                                      "--output_labels", tmp_path / "l.txt"), "--output_graph", "--image_dir")
    assert "inside" in line and not (tree / "graph.pb").exists()


def test_retrain_refuses_output_labels_equal_to_output_graph(tree, tmp_path):
    graph = tmp_path / "a.pb"
    graph.write_bytes(b"a previous model")
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", graph, "--output_labels", graph),
                    "--output_labels", "--output_graph", untouched=(graph,))
    assert line == f"error: --output_labels {graph.resolve()} is the same file as --output_graph"


def test_retrain_refuses_a_symlink_to_another_output(tree, tmp_path):
    (tmp_path / "l.txt").write_text("red\n")
    os.symlink(tmp_path / "l.txt", tmp_path / "link.txt")
    _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "link.txt",
                               "--output_labels", tmp_path / "l.txt"), "--output_graph", "--output_labels")


def test_retrain_refuses_output_labels_over_the_training_plot(tree, tmp_path):
    _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "g.pb",
                               "--output_labels", tmp_path / "g.training.png"),
             "--output_labels", "--output_graph's training plot")


def test_retrain_refuses_an_output_over_the_tflite_sidecar(tree, tmp_path):
    _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "g.pb", "--tflite_output",
                               tmp_path / "m.tflite", "--output_labels", tmp_path / "m.tflite.json"),
             "--output_labels", "--tflite_output's sidecar")


def test_retrain_refuses_the_metadata_csv_as_an_output(tree, tmp_path):
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate\nred_0,50\n")
    _refused(retrain, _retrain(tree, tmp_path, "--metadata", metadata, "--output_graph", tmp_path / "g.pb",
                               "--output_labels", metadata), "--output_labels", "--metadata", untouched=(metadata,))


@pytest.mark.parametrize("flag", ["--saved_model_dir", "--summaries_dir", "--intermediate_output_graphs_dir"])
def test_retrain_refuses_an_existing_file_as_an_output_folder(tree, tmp_path, flag):
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "g.pb", "--output_labels",
                                      tmp_path / "l.txt", flag, existing, "--intermediate_store_frequency", 5),
                    flag, untouched=(existing,))
    assert "is a file, not a folder" in line
    assert not (tmp_path / "g.pb").exists()


def test_retrain_refuses_a_non_saved_model_folder_before_training(tree, tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "notes.txt").write_text("keep me")
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "g.pb", "--output_labels",
                                      tmp_path / "l.txt", "--saved_model_dir", tmp_path / "sm"), "--saved_model_dir",
                    untouched=(tmp_path / "sm" / "notes.txt",))
    assert "not a SavedModel" in line and not (tmp_path / "g.pb").exists()


def test_retrain_refuses_an_output_inside_the_saved_model_it_replaces(tree, tmp_path):
    _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "sm" / "g.pb", "--output_labels",
                               tmp_path / "l.txt", "--saved_model_dir", tmp_path / "sm"),
             "--output_graph", "--saved_model_dir")


def test_retrain_refuses_the_fine_tuning_folder_as_another_output(tree, tmp_path):
    _refused(retrain, _retrain(tree, tmp_path, "--fine_tune_layers", 1, "--output_graph", tmp_path / "g.pb",
                               "--output_labels", tmp_path / "l.txt", "--summaries_dir", tmp_path / "g.finetune"),
             "--summaries_dir", "--output_graph's fine-tuning folder")


def test_retrain_refuses_an_output_whose_folder_is_a_file(tree, tmp_path):
    (tmp_path / "file").write_text("x")
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "file" / "g.pb",
                                      "--output_labels", tmp_path / "l.txt"), "--output_graph")
    assert "cannot create its folder" in line


@pytest.fixture
def stand_ins(tmp_path, make_tree):
    """A model, labels, metadata and image tree that are never read: the check comes first."""
    (tmp_path / "graph.pb").write_bytes(b"stand-in model")
    (tmp_path / "labels.txt").write_text("blue\nred\n")
    (tmp_path / "meta.csv").write_text("image_id,sex\nred_0,female\n")
    return tmp_path, make_tree({"red": 2, "blue": 2})


def test_evaluate_refuses_predictions_over_the_graph(stand_ins):
    root, images = stand_ins
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--predictions", root / "graph.pb"],
             "--predictions", "--graph", untouched=(root / "graph.pb",))


@pytest.mark.parametrize("flag", ["--json", "--plot", "--report", "--predictions"])
def test_evaluate_refuses_each_output_over_the_labels(stand_ins, flag):
    root, images = stand_ins
    _refused(evaluate, ["--graph", root / "graph.pb", "--labels", root / "labels.txt", "--image_dir", images,
                        flag, root / "labels.txt"], flag, "--labels", untouched=(root / "labels.txt",))


def test_evaluate_refuses_json_over_the_metadata(stand_ins):
    root, images = stand_ins
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--metadata", root / "meta.csv",
                        "--json", root / "meta.csv"], "--json", "--metadata", untouched=(root / "meta.csv",))


def test_evaluate_refuses_a_plot_over_an_image(stand_ins):
    root, images = stand_ins
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--plot", images / "red" / "red_0.jpg"],
             "--plot", "--image_dir", untouched=(images / "red" / "red_0.jpg",))


def test_evaluate_refuses_two_outputs_on_one_file(stand_ins):
    root, images = stand_ins
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--json", root / "out.csv",
                        "--predictions", root / "out.csv"], "--json", "--predictions")


def test_evaluate_checks_the_numbered_predictions_of_several_graphs(stand_ins):
    root, images = stand_ins
    (root / "p_2.csv").write_text("blue\nred\n")
    (root / "second.pb").write_bytes(b"another stand-in")
    _refused(evaluate, ["--graph", root / "graph.pb", "--graph", root / "second.pb", "--labels", root / "labels.txt",
                        "--labels", root / "p_2.csv", "--image_dir", images, "--predictions", root / "p.csv"],
             "--predictions (model 2)", "--labels", untouched=(root / "p_2.csv",))


def test_label_image_refuses_a_heatmap_over_the_image(stand_ins):
    root, images = stand_ins
    image = images / "red" / "red_0.jpg"
    _refused(label_image, ["--graph", root / "graph.pb", "--image", image, "--heatmap", image],
             "--heatmap", "--image", untouched=(image,))


def test_label_image_refuses_a_heatmap_through_a_symlink_to_the_graph(stand_ins):
    root, images = stand_ins
    os.symlink(root / "graph.pb", root / "heat.png")
    _refused(label_image, ["--graph", root / "graph.pb", "--image", images / "red" / "red_0.jpg",
                           "--heatmap", root / "heat.png"], "--heatmap", "--graph", untouched=(root / "graph.pb",))


def test_export_tflite_refuses_an_output_inside_the_saved_model(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"stand-in")
    _refused(export_tflite, ["--saved_model_dir", tmp_path / "sm", "--output", tmp_path / "sm" / "m.tflite"],
             "--output", "--saved_model_dir")
    assert not (tmp_path / "sm" / "m.tflite").exists()


def test_export_tflite_refuses_its_sidecar_over_the_reference_sidecar(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "ref.tflite").write_bytes(b"stand-in")
    sidecar = tmp_path / "ref.tflite.json"
    sidecar.write_text("{}")
    _refused(export_tflite, ["--saved_model_dir", tmp_path / "sm", "--output", tmp_path / "ref.tflite",
                             "--reference_graph", tmp_path / "ref.tflite"], "--output", "--reference_graph",
             untouched=(tmp_path / "ref.tflite", sidecar))


def test_outputs_of_a_previous_run_may_be_overwritten(tmp_path):
    for name in ("g.pb", "l.txt"):
        (tmp_path / name).write_text("last run")
    (tmp_path / "sm").mkdir()
    check_outputs({"--image_dir": tmp_path / "images"}, {"--output_graph": tmp_path / "g.pb",
                                                         "--output_labels": tmp_path / "l.txt"},
                  {"--saved_model_dir": tmp_path / "sm", "--summaries_dir": tmp_path / "runs"},
                  replaced=("--saved_model_dir",))


def test_a_hard_link_to_an_input_is_the_same_file(tmp_path):
    (tmp_path / "labels.txt").write_text("a\n")
    os.link(tmp_path / "labels.txt", tmp_path / "copy.txt")
    with pytest.raises(UserError, match="--json .* is the same file as --labels"):
        check_outputs({"--labels": tmp_path / "labels.txt"}, {"--json": tmp_path / "copy.txt"})


def test_a_replaced_folder_may_not_hold_an_input(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="--saved_model_dir .* holds --image_dir"):
        check_outputs({"--image_dir": tmp_path / "images"}, {}, {"--saved_model_dir": tmp_path},
                      replaced=("--saved_model_dir",))


@pytest.fixture
def linked_tree(tmp_path, make_tree):
    """A tree of symlinks to images kept elsewhere, as a tree made of ISIC images often is."""
    store = make_tree({"red": 3, "blue": 3}, root=tmp_path / "store")
    for image in store.rglob("*.jpg"):
        link = tmp_path / "linked" / image.parent.name / image.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(image)
    return tmp_path / "linked"


def _link_intact(link: Path, target: Path, digest: str) -> None:
    assert link.is_symlink() and link.resolve() == target.resolve() and _digest(target) == digest


def test_retrain_refuses_output_labels_over_a_symlinked_training_image(linked_tree, tmp_path):
    link = linked_tree / "red" / "red_0.jpg"
    target, digest = link.resolve(), _digest(link)
    line = _refused(retrain, _retrain(linked_tree, tmp_path, "--output_graph", tmp_path / "g.pb",
                                      "--output_labels", link), "--output_labels", "--image_dir")
    assert str(link) in line
    _link_intact(link, target, digest)
    assert not (tmp_path / "g.pb").exists()


def test_evaluate_refuses_a_report_over_a_symlinked_image(stand_ins, linked_tree):
    root, _ = stand_ins
    link = linked_tree / "blue" / "blue_1.jpg"
    target, digest = link.resolve(), _digest(link)
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", linked_tree, "--report", link],
             "--report", "--image_dir")
    _link_intact(link, target, digest)


def test_evaluate_refuses_an_output_that_is_a_symlink(stand_ins, tmp_path):
    """Writing replaces a link with a new file: the link the user made would be lost."""
    root, images = stand_ins
    (tmp_path / "kept.json").write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "kept.json")
    line = _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--json", link], "--json")
    assert "is a symlink" in line
    _link_intact(link, tmp_path / "kept.json", _digest(tmp_path / "kept.json"))


def test_retrain_refuses_a_saved_model_dir_that_is_a_symlink(tree, tmp_path):
    (tmp_path / "models" / "sm").mkdir(parents=True)
    (tmp_path / "models" / "sm" / "saved_model.pb").write_bytes(b"an earlier SavedModel")
    (tmp_path / "sm").symlink_to(tmp_path / "models" / "sm")
    line = _refused(retrain, _retrain(tree, tmp_path, "--output_graph", tmp_path / "g.pb", "--output_labels",
                                      tmp_path / "l.txt", "--saved_model_dir", tmp_path / "sm"), "--saved_model_dir",
                    untouched=(tmp_path / "models" / "sm" / "saved_model.pb",))
    assert "is a symlink" in line and (tmp_path / "sm").is_symlink()


def test_retrain_refuses_a_bottleneck_dir_inside_a_class_folder(tree, tmp_path):
    _refused(retrain, ["--image_dir", tree, "--bottleneck_dir", tree / "red" / "cache", "--how_many_training_steps", 5,
                       "--output_graph", tmp_path / "g.pb", "--output_labels", tmp_path / "l.txt"],
             "--bottleneck_dir", "--image_dir")
    assert not (tree / "red" / "cache").exists()


def test_evaluate_refuses_a_plot_suffix_it_cannot_draw_before_loading_the_model(stand_ins):
    root, images = stand_ins
    line = _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", images, "--plot", root / "roc.txt",
                               "--json", root / "m.json"], "--plot")
    assert ".txt" in line and ".png" in line
    assert not (root / "roc.txt").exists()


def test_evaluate_checks_the_png_a_plot_without_suffix_is_written_to(stand_ins):
    root, images = stand_ins
    (root / "labels.png").symlink_to(root / "labels.txt")
    _refused(evaluate, ["--graph", root / "graph.pb", "--labels", root / "labels.txt", "--image_dir", images,
                        "--plot", root / "labels"], "--plot", "--labels", untouched=(root / "labels.txt",))


def test_evaluate_refuses_an_output_inside_a_symlinked_class_folder(stand_ins, tmp_path):
    """The scan follows a class folder that links elsewhere, so a file written through it joins the tree."""
    root, _ = stand_ins
    store = tmp_path / "store"
    (store / "blue").mkdir(parents=True)
    (tmp_path / "elsewhere" / "red").mkdir(parents=True)
    (store / "red").symlink_to(tmp_path / "elsewhere" / "red")
    _refused(evaluate, ["--graph", root / "graph.pb", "--image_dir", store, "--json", store / "red" / "m.json"],
             "--json", "--image_dir")
    assert not (tmp_path / "elsewhere" / "red" / "m.json").exists()
