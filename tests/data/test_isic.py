from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from retrain.cli import prepare_isic as prepare_isic_command
from retrain.data.isic import prepare_isic
from retrain.errors import UserError

# (image id, melanoma, seborrheic keratosis) in the challenge's 0.0/1.0 spelling.
ROWS = [
    ("ISIC_0000001", "1.0", "0.0"),
    ("ISIC_0000002", "0.0", "1.0"),
    ("ISIC_0000003", "0.0", "0.0"),
    ("ISIC_0000004", "0.0", "0.0"),
    ("ISIC_0000005", "1.0", "0.0"),
]


def write_challenge(root: Path, rows=ROWS, header="image_id,melanoma,seborrheic_keratosis", images=None, set_name="Training"):
    data = root / f"ISIC-2017_{set_name}_Data"
    data.mkdir(parents=True, exist_ok=True)
    for image_id in images if images is not None else [r[0] for r in rows]:
        Image.new("RGB", (8, 8), (150, 90, 80)).save(data / f"{image_id}.jpg")
    Image.new("L", (8, 8)).save(data / "ISIC_0000001_superpixels.png")  # the challenge ships these; ignored
    truth = root / f"ISIC-2017_{set_name}_Part3_GroundTruth.csv"
    truth.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return data, truth


@pytest.fixture
def challenge(tmp_path):
    return write_challenge(tmp_path / "challenge")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_the_three_trees_with_the_right_classes(challenge, tmp_path):
    data, truth = challenge
    out = tmp_path / "out"
    result = prepare_isic(data, truth, out)
    assert _names(out / "task1_melanoma" / "melanoma") == ["ISIC_0000001.jpg", "ISIC_0000005.jpg"]
    assert len(_names(out / "task1_melanoma" / "other")) == 3
    assert _names(out / "task2_seborrheic_keratosis" / "seborrheic_keratosis") == ["ISIC_0000002.jpg"]
    assert len(_names(out / "task2_seborrheic_keratosis" / "other")) == 4
    assert _names(out / "three_class" / "nevus") == ["ISIC_0000003.jpg", "ISIC_0000004.jpg"]
    assert result.counts["three_class"] == {"melanoma": 2, "nevus": 2, "seborrheic_keratosis": 1}
    assert result.methods == {"hard link": 15}
    assert (data / "ISIC_0000001.jpg").exists()  # originals stay where they were


def test_a_rerun_gives_the_same_trees(challenge, tmp_path):
    data, truth = challenge
    out = tmp_path / "out"
    prepare_isic(data, truth, out)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    prepare_isic(data, truth, out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_the_trees_are_what_retrain_reads(challenge, tmp_path):
    from retrain.data.dataset import scan_image_tree

    data, truth = challenge
    prepare_isic(data, truth, tmp_path / "out")
    assert scan_image_tree(tmp_path / "out" / "task2_seborrheic_keratosis").labels == ["other", "seborrheic keratosis"]


def test_each_task_folder_has_a_manifest_listing_its_tree(challenge, tmp_path):
    from retrain.data.dataset import scan_image_tree
    from retrain.data.manifest import read_manifest

    data, truth = challenge
    prepare_isic(data, truth, tmp_path / "out")
    for task in ("task1_melanoma", "task2_seborrheic_keratosis", "three_class"):
        folder = tmp_path / "out" / task
        listed, scanned = read_manifest(folder / "images.csv").image_tree, scan_image_tree(folder)
        assert listed.labels == scanned.labels
        assert [c.images for c in listed.classes] == [c.images for c in scanned.classes]


@pytest.mark.parametrize(
    "rows, header, images, message",
    [
        (ROWS, None, [r[0] for r in ROWS[:-1]], "ISIC_0000005: in .* but no image"),
        (ROWS[:-1], None, [r[0] for r in ROWS], "ISIC_0000005.jpg: image has no row"),
        (ROWS + [("ISIC_0000006", "1.0", "1.0")], None, None, "ISIC_0000006: both melanoma and seborrheic_keratosis are 1"),
        (ROWS + [("ISIC_0000006", "2", "0")], None, None, "ISIC_0000006: values must be 0 or 1"),
        (ROWS + [("ISIC_0000006", "yes", "0")], None, None, "values must be 0 or 1"),
        (ROWS + [ROWS[0]], None, None, "duplicate image_id ISIC_0000001"),
        ([(r[0], r[1]) for r in ROWS], "image_id,melanoma", None, "missing column.*seborrheic_keratosis"),
    ],
    ids=["id_without_image", "image_without_row", "both_labels", "value_two", "value_word", "duplicate", "missing_column"],
)
def test_bad_input_is_reported_and_nothing_is_written(tmp_path, rows, header, images, message):
    data, truth = write_challenge(
        tmp_path / "challenge", rows, header or "image_id,melanoma,seborrheic_keratosis", images
    )
    out = tmp_path / "out"
    with pytest.raises(UserError, match=message):
        prepare_isic(data, truth, out)
    assert not out.exists() or not any(out.iterdir())


def test_metadata_is_checked_against_the_ground_truth(challenge, tmp_path):
    data, truth = challenge
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000001,55,female\nISIC_0000002,unknown,unknown\n")
    assert prepare_isic(data, truth, tmp_path / "ok", metadata).sexes == {"female": 1, "unknown": 1}
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000099,55,female\nISIC_0000002,old,x\n")
    with pytest.raises(UserError) as info:
        prepare_isic(data, truth, tmp_path / "bad", metadata)
    text = str(info.value)
    assert "ISIC_0000099 is not in the ground truth" in text and "age_approximate" in text and "sex must be" in text


def test_an_existing_folder_it_did_not_make_is_left_alone(challenge, tmp_path):
    data, truth = challenge
    out = tmp_path / "out"
    (out / "three_class").mkdir(parents=True)
    (out / "three_class" / "precious.txt").write_text("mine")
    with pytest.raises(UserError, match="was not made by prepare_isic"):
        prepare_isic(data, truth, out)
    assert (out / "three_class" / "precious.txt").read_text() == "mine"


def test_command_reports_counts_per_class_and_how_images_were_placed(challenge, tmp_path):
    data, truth = challenge
    result = CliRunner().invoke(
        prepare_isic_command, ["--images", str(data), "--ground_truth", str(truth), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert "task1_melanoma: melanoma 2, other 3" in result.output
    assert "hard link (15)" in result.output


def test_command_gives_one_error_block_and_exit_one_for_a_missing_csv(challenge, tmp_path):
    data, _ = challenge
    result = CliRunner().invoke(
        prepare_isic_command, ["--images", str(data), "--ground_truth", str(tmp_path / "none.csv"), "--output", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "none.csv: cannot read" in result.stderr and "Traceback" not in result.output


SHARED_ISIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "isic2017"


@pytest.mark.skipif(not SHARED_ISIC.is_dir(), reason=f"real ISIC 2017 data not present at {SHARED_ISIC}")
def test_real_isic_validation_set_is_prepared_with_the_challenge_class_counts(tmp_path):
    result = prepare_isic(
        SHARED_ISIC / "ISIC-2017_Validation_Data",
        SHARED_ISIC / "ISIC-2017_Validation_Part3_GroundTruth.csv",
        tmp_path / "out",
        SHARED_ISIC / "ISIC-2017_Validation_Data_metadata.csv",
    )
    assert result.counts["three_class"] == {"melanoma": 30, "nevus": 78, "seborrheic_keratosis": 42}
    assert result.counts["task1_melanoma"] == {"melanoma": 30, "other": 120}
    assert result.counts["task2_seborrheic_keratosis"] == {"seborrheic_keratosis": 42, "other": 108}
    assert len(list((SHARED_ISIC / "ISIC-2017_Validation_Data").glob("*.jpg"))) == 150  # originals untouched


def test_a_task_folder_that_is_a_symlink_is_refused_before_anything_is_replaced(challenge, tmp_path):
    data, truth = challenge
    first = tmp_path / "first"
    assert CliRunner().invoke(prepare_isic_command, ["--images", str(data), "--ground_truth", str(truth),
                                                     "--output", str(first)]).exit_code == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "three_class").symlink_to(first / "three_class")
    result = CliRunner().invoke(prepare_isic_command, ["--images", str(data), "--ground_truth", str(truth),
                                                       "--output", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"--output {out / 'three_class'}: is a symlink" in line
    assert (out / "three_class").is_symlink() and not [p for p in out.iterdir() if p.name != "three_class"]


def test_prepare_isic_reports_a_bad_ground_truth_row_once(tmp_path):
    data, truth = write_challenge(tmp_path / "challenge", ROWS + [("ISIC_0000006", "2", "0")])
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000006,55,female\n")
    with pytest.raises(UserError) as info:
        prepare_isic(data, truth, tmp_path / "out", metadata)
    assert str(info.value).count("ISIC_0000006") == 1 and "1 problem(s)" in str(info.value)


def test_prepare_isic_calls_a_negative_age_out_of_range_not_a_non_number(tmp_path):
    data, truth = write_challenge(tmp_path / "challenge")
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000001,-3,female\nISIC_0000002,old,male\n")
    with pytest.raises(UserError) as info:
        prepare_isic(data, truth, tmp_path / "out", metadata)
    text = str(info.value)
    assert "ISIC_0000001: age_approximate must be between 0 and 120 years, got '-3'" in text
    assert "ISIC_0000002: age_approximate must be a number or 'unknown', got 'old'" in text
