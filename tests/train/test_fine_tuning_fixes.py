"""An image that cannot be read after its bottleneck was made, during fine-tuning: its row
leaves every array of its set (features, labels, patient rows), with a warning naming it."""

import pytest

from retrain.cli import retrain
from retrain.data.dataset import set_for_file
from tests.conftest import run_cli

PERCENTAGES = (30, 30)  # --validation_percentage, --testing_percentage


@pytest.mark.parametrize("set_name, with_metadata", [("test", False), ("training", True)])
def test_an_image_unreadable_after_extraction_is_left_out_of_the_tuned_sets_with_a_warning(
        make_tree, tmp_path, monkeypatch, set_name, with_metadata):
    from retrain.train import fine_tuning

    tree = make_tree({"red": 6, "blue": 6})
    spoiled = next(p for p in sorted(tree.rglob("*.jpg")) if set_for_file(p, *PERCENTAGES) == set_name)
    real_fine_tune = fine_tuning.fine_tune

    def fine_tune_after_the_image_is_spoiled(*args, **kwargs):
        spoiled.write_bytes(b"not an image any more")
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(fine_tuning, "fine_tune", fine_tune_after_the_image_is_spoiled)
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age\n" + "".join(f"{p.stem},{40 + i}\n" for i, p in enumerate(tree.rglob("*.jpg"))))
    out = tmp_path / "out"
    result = run_cli(retrain, [
        "--image_dir", tree, "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt",
        "--bottleneck_dir", tmp_path / "bn", "--recipe", "finetune", "--image_size", 64, "--fine_tune_layers", 1,
        "--fine_tune_steps", 1, "--fine_tune_epochs", 1, "--fine_tune_batch_size", 4, "--how_many_training_steps", 10,
        "--validation_percentage", PERCENTAGES[0], "--testing_percentage", PERCENTAGES[1], "--random_seed", 2,
        "--print_misclassified_test_images", *(["--metadata", metadata] if with_metadata else []),
    ])
    assert result.exit_code == 0, result.output
    named = [line for line in result.stderr.splitlines() if str(spoiled) in line and "after fine-tuning" in line]
    assert len(named) == 1 and named[0].startswith("warning: "), result.stderr
    assert (out / "g.pb").is_file()
