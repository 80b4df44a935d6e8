"""Patient metadata: reading the CSV, inferring kinds, matching images to rows (ids with or without
the extension), ages outside 0..120 treated as missing, fitting, encoding and the JSON form."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import retrain
from retrain.data.dataset import Split
from retrain.patient.encoded_sets import Columns, encode_patients
from retrain.patient.table import (
    ColumnEncoding,
    MetadataEncoding,
    describe,
    encode,
    fit_encoding,
    match_images,
    parse_key_values,
    read_metadata_csv,
)
from retrain.errors import UserError
from retrain.reporter import Reporter
from tests.conftest import run_cli

ISIC_LIKE = "image_id,age_approximate,sex\nA,20,female\nB,40,Male\nC,60,unknown\nD,unknown,female\n"


def write(tmp_path, text: str, name: str = "meta.csv", encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def table_of(tmp_path, text: str = ISIC_LIKE):
    return read_metadata_csv(write(tmp_path, text))


def fail(*args, **kwargs) -> None:
    raise AssertionError(f"unexpected warning: {args}")


def error_of(function, *args, **kwargs) -> str:
    with pytest.raises(UserError) as caught:
        function(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_table_keeps_file_order_and_stripped_strings(tmp_path):
    table = table_of(tmp_path, "sex , image_id,age\n female , A , 20\n\n,B\n")
    assert table.columns == ("sex", "age")
    assert table.rows == {"A": {"sex": "female", "age": "20"}, "B": {"sex": "", "age": ""}}
    assert table.lines == {"A": 2, "B": 4}


def test_numeric_column_is_standardised_with_missing_flag(tmp_path):
    table = table_of(tmp_path)
    encoding = fit_encoding(table, ["A", "B", "C", "D"], columns=["age_approximate"])
    (age,) = encoding.columns
    assert age.kind == "numeric"
    assert age.mean == pytest.approx(40.0)
    assert age.std == pytest.approx(math.sqrt(800 / 3))
    matrix = encode(encoding, [table.rows[i] for i in "ABCD"], fail)
    assert matrix.dtype == np.float32 and matrix.shape == (4, 2)
    step = 20 / math.sqrt(800 / 3)
    np.testing.assert_allclose(matrix, [[-step, 0], [0, 0], [step, 0], [0, 1]], rtol=1e-6)


def test_categorical_column_is_one_hot_with_unknown_last(tmp_path):
    table = table_of(tmp_path)
    encoding = fit_encoding(table, ["A", "B", "C", "D"], columns=["sex"])
    assert encoding.columns == (ColumnEncoding("sex", "categorical", categories=("female", "male")),)
    assert encoding.feature_names == ["sex=female", "sex=male", "sex=unknown"]
    matrix = encode(encoding, [{"sex": "FEMALE"}, {"sex": "male"}, {"sex": " N/A "}, {}, None], fail)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])


def test_fitting_uses_training_rows_but_kind_comes_from_whole_file(tmp_path):
    table = table_of(tmp_path, "image_id,age,site\nA,10,arm\nB,30,leg\nC,1000,head\n")
    encoding = fit_encoding(table, ["A", "B", "missing-from-csv"])
    age, site = encoding.columns
    assert (age.mean, age.std) == (20.0, 10.0)
    assert site.categories == ("arm", "leg")
    text = "image_id,code\nA,1\nB,2\nC,3\nD,lateral\n"
    assert fit_encoding(table_of(tmp_path, text), ["A", "B", "C"]).columns[0].kind == "categorical"


def test_constant_and_all_missing_columns_use_unit_std(tmp_path):
    table = table_of(tmp_path, "image_id,dose,age\nA,5,\nB,5,NA\n")
    dose, age = fit_encoding(table, ["A", "B"]).columns
    assert (dose.mean, dose.std) == (5.0, 1.0)
    assert (age.kind, age.mean, age.std) == ("numeric", 0.0, 1.0)


def test_unseen_category_is_unknown_with_one_warning(tmp_path):
    encoding = fit_encoding(table_of(tmp_path), ["A", "B", "C", "D"], columns=["sex"])
    warnings: list[str] = []
    matrix = encode(encoding, [{"sex": "other"}, {"sex": "Other"}, {"sex": "male"}], warnings.append)
    np.testing.assert_array_equal(matrix[:, 2], [1, 1, 0])
    assert warnings == ["sex: 'other' was not seen in training; treated as unknown (2 rows)"]
    encode(encoding, [{"sex": "x"}], warnings.append, source="--metadata f.csv")
    assert warnings[-1] == "--metadata f.csv: sex: 'x' was not seen in training; treated as unknown"


def test_non_number_in_numeric_column_names_source_column_and_value(tmp_path):
    encoding = fit_encoding(table_of(tmp_path), ["A"], columns=["age_approximate"])
    message = error_of(encode, encoding, [{"age_approximate": "old"}], fail, source="--metadata e.csv")
    assert message == "--metadata e.csv: column 'age_approximate': 'old' is not a number"


def test_duplicate_id_error_names_both_lines(tmp_path):
    message = error_of(read_metadata_csv, write(tmp_path, "image_id,age\nA,1\nB,2\n\nA,3\n"))
    assert message.startswith("PatientConfig.files ") and "meta.csv" in message
    assert "A appears twice (lines 2 and 5)" in message


def test_mostly_numeric_column_with_a_word_is_an_error(tmp_path):
    rows = "".join(f"I{i},{20 + i}\n" for i in range(9))
    table = table_of(tmp_path, "image_id,age\n" + rows + "I9,forty\n")
    message = error_of(fit_encoding, table, ["I0"])
    assert "column 'age' looks numeric (9 of 10 values are numbers) but line 11 has 'forty'" in message
    assert message.endswith("pass PatientConfig.categorical age if it is a category")
    forced = fit_encoding(table, ["I0", "I9"], categorical=["age"])
    assert forced.columns[0].categories == ("20", "forty")


def test_forced_numeric_column_with_a_word_is_an_error(tmp_path):
    table = table_of(tmp_path, "image_id,grade\nA,1\nB,high\n")
    assert fit_encoding(table, ["A"]).columns[0].kind == "categorical"
    message = error_of(fit_encoding, table, ["A"], numeric=["grade"])
    assert "column 'grade' is in PatientConfig.numeric but line 3 has 'high', which is not a number" in message


def test_unknown_or_conflicting_column_names_are_errors(tmp_path):
    table = table_of(tmp_path)
    message = error_of(fit_encoding, table, ["A"], columns=["age_approximate", "site"])
    assert message.startswith("PatientConfig.columns: ") and "no column 'site' (columns: age_approximate, sex)" in message
    message = error_of(fit_encoding, table, ["A"], categorical=["site"])
    assert message.startswith("PatientConfig.categorical: ") and "no column 'site'" in message
    message = error_of(fit_encoding, table, ["A"], columns=["age_approximate"], categorical=["sex"])
    assert "'sex' is not one of PatientConfig.columns (age_approximate)" in message
    message = error_of(fit_encoding, table, ["A"], categorical=["sex"], numeric=["sex"])
    assert message == "column 'sex' is in both PatientConfig.categorical and PatientConfig.numeric"
    assert "listed twice" in error_of(fit_encoding, table, ["A"], columns=["sex", "sex"])


def test_encoding_round_trips_through_json(tmp_path):
    encoding = fit_encoding(table_of(tmp_path), ["A", "B", "C", "D"])
    data = json.loads(json.dumps(encoding.to_json()))
    assert MetadataEncoding.from_json(data) == encoding
    assert data["features"] == ["age_approximate", "age_approximate_missing", "sex=female", "sex=male", "sex=unknown"]
    assert data["width"] == encoding.width == 5
    assert data["columns"][0]["mean"] == 40.0 and data["columns"][1]["categories"] == ["female", "male"]


@pytest.mark.parametrize("damage", [
    lambda d: d.pop("columns"),
    lambda d: d.update(version=2),
    lambda d: d["columns"][0].update(kind="ordinal"),
    lambda d: d["columns"][0].update(std=0),
    lambda d: d["columns"][0].update(mean="40"),
    lambda d: d["columns"][1].update(categories=["male", "male"]),
    lambda d: d["features"].pop(),
    lambda d: d.update(columns=["age"]),
])
def test_damaged_json_is_a_user_error(tmp_path, damage):
    data = fit_encoding(table_of(tmp_path), ["A", "B"]).to_json()
    damage(data)
    message = error_of(MetadataEncoding.from_json, data, source="model.json")
    assert message.startswith("model.json: the model's patient-metadata encoding is damaged (")


def test_images_without_rows_are_all_missing_and_counted(tmp_path):
    table = table_of(tmp_path)
    paths = [tmp_path / "x" / "A.jpg", "y/b.PNG", "z/E.jpg", "D.jpeg"]
    rows, without_row, unused = match_images(table, paths)
    assert rows == [table.rows["A"], table.rows["B"], None, table.rows["D"]]
    assert (without_row, unused) == (1, 1)
    encoding = fit_encoding(table, ["A", "B", "C", "D"])
    np.testing.assert_array_equal(encode(encoding, rows, fail)[2], [0, 1, 0, 0, 1])


def test_exact_id_wins_over_case_insensitive_match(tmp_path):
    table = table_of(tmp_path, "image_id,age\nabc,1\nABC,2\nxyz,3\n")
    rows, without_row, unused = match_images(table, ["abc.jpg", "ABC.jpg", "Abc.jpg", "XYZ.jpg"])
    assert [row and row["age"] for row in rows] == ["1", "2", None, "3"]
    assert (without_row, unused) == (1, 0)


def test_bom_file_reads_image_id(tmp_path):
    table = read_metadata_csv(write(tmp_path, "image_id,age\r\nA,5\r\n", encoding="utf-8-sig"))
    assert table.columns == ("age",) and table.rows == {"A": {"age": "5"}}


@pytest.mark.parametrize("text, expected", [
    ("", "the file is empty (expected a header line with image_id)"),
    ("\n\n", "the file is empty (expected a header line with image_id)"),
    ("id,age\nA,1\n", "no image_id column (found: id, age)"),
    ("image_id,age\nA,1,2\n", "line 2 has 3 cells but the header has 2"),
    ("image_id,age\n,5\n", "line 2 has an empty image_id"),
    ("image_id,age,age\nA,1,2\n", "column 'age' appears twice in the header (columns 2 and 3)"),
    ("image_id,,age\nA,1,2\n", "column 2 of the header has no name"),
    ("image_id,age\nA,1\nB,\"2\nC,3\n", "the record from line 3 is not valid CSV (unexpected end of data)"),
])
def test_bad_csv_is_one_line_naming_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    assert error_of(read_metadata_csv, path, flag="--eval_metadata") == f"--eval_metadata {path}: {expected}"


def test_short_rows_and_trailing_empty_cells_are_missing(tmp_path):
    table = table_of(tmp_path, "image_id,age,sex\nA,5\nB,6,male,,\n")
    assert table.rows == {"A": {"age": "5", "sex": ""}, "B": {"age": "6", "sex": "male"}}


def test_missing_and_non_utf8_files_are_errors(tmp_path):
    assert error_of(read_metadata_csv, tmp_path / "nope.csv").endswith("nope.csv: no such file")
    path = write(tmp_path, "image_id,city\nA,Z\u00fcrich\n", encoding="latin-1")
    assert error_of(read_metadata_csv, path) == f"PatientConfig.files {path}: line 2 is not UTF-8 text; save the file as UTF-8 CSV"


def test_parse_key_values_fills_missing_columns(tmp_path):
    encoding = fit_encoding(table_of(tmp_path), ["A", "B"])
    assert parse_key_values(" sex = female , ", encoding) == {"age_approximate": "", "sex": "female"}
    row = parse_key_values("age_approximate=55,sex=", encoding)
    assert row == {"age_approximate": "55", "sex": ""}
    np.testing.assert_allclose(encode(encoding, [row], fail), [[(55 - 30) / 10, 0, 0, 0, 1]])


@pytest.mark.parametrize("text, expected", [
    ("age_approximate", "'age_approximate' is not NAME=VALUE"),
    ("=55", "'=55' has no column name before '='"),
    ("sex=male,sex=female", "sex is given twice"),
    ("site=arm", "the model has no metadata column 'site' (columns: age_approximate, sex)"),
])
def test_parse_key_values_errors(tmp_path, text, expected):
    encoding = fit_encoding(table_of(tmp_path), ["A", "B"])
    assert error_of(parse_key_values, text, encoding) == f"Classifier.patient_metadata {text!r}: {expected}"


def test_describe_gives_kind_statistics_and_missing_counts(tmp_path):
    table = table_of(tmp_path)
    encoding = fit_encoding(table, ["A", "B", "C", "D"])
    assert describe(encoding) == [
        "age_approximate: numeric, mean 40.0, sd 16.3",
        "sex: categorical: female, male (+ unknown)",
    ]
    assert describe(encoding, table, ["A", "B", "C", "D", "E"]) == [
        "age_approximate: numeric, mean 40.0, sd 16.3 (2 of 5 missing)",
        "sex: categorical: female, male (+ unknown) (2 of 5 missing)",
    ]


def test_module_imports_neither_tensorflow_nor_click():
    code = "import sys, retrain.patient.table; print(sorted({'tensorflow', 'click'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_tables_from_several_files_merge_and_a_shared_id_names_both(tmp_path):
    from retrain.patient.table import merge_tables

    first, second = tmp_path / "train.csv", tmp_path / "val.csv"
    first.write_text("image_id,age\na,30\nb,40\n")
    second.write_text("image_id,age,sex\nc,50,male\n")
    merged = merge_tables([read_metadata_csv(first), read_metadata_csv(second)])
    assert merged.columns == ("age", "sex") and set(merged.rows) == {"a", "b", "c"}
    assert merged.line_of("c") == f"{second} line 2"
    second.write_text("image_id,age\nb,41\n")
    with pytest.raises(UserError, match=r"'b' is in .*train.csv \(line 3\) and in .*val.csv \(line 2\)"):
        merge_tables([read_metadata_csv(first), read_metadata_csv(second)])


def _table_with_file_names_as_ids(tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text("image_id,age,sex\nISIC_1.jpg,40,male\nISIC_2.jpg,60,female\nISIC_3.jpg,80,female\n")
    return read_metadata_csv(csv)


def test_fit_encoding_finds_rows_whose_ids_include_the_extension(tmp_path):
    table = _table_with_file_names_as_ids(tmp_path)
    images = [Path("images/a/ISIC_1.jpg"), Path("images/b/ISIC_2.jpg")]
    encoding = fit_encoding(table, images, None, ("sex",), ("age",))
    by_name = {column.name: column for column in encoding.columns}
    assert (by_name["age"].mean, by_name["age"].std) == (50.0, 10.0)
    assert by_name["sex"].categories == ("female", "male")


def test_training_rows_with_extension_ids_are_standardised(tmp_path):
    table = _table_with_file_names_as_ids(tmp_path)
    split = Split(training=[(Path("a/ISIC_1.jpg"), 0), (Path("b/ISIC_2.jpg"), 1)],
                  validation=[(Path("a/ISIC_3.jpg"), 0)], test=[], notes=[])
    encoded = encode_patients(table, Columns(numeric=("age",), categorical=("sex",)), split, Reporter(log=lambda _: None))
    columns = encoded.encoding.feature_names
    training = encoded.rows[0]
    age = training[:, columns.index("age")]
    np.testing.assert_allclose(age, [-1.0, 1.0])
    assert training[:, columns.index("sex=male")].tolist() == [1.0, 0.0]


def test_ages_outside_0_to_120_are_missing_with_one_warning_per_file_and_column(make_tree, tmp_path):
    image_dir = make_tree({"red": 4, "blue": 4})
    csv = tmp_path / "meta.csv"
    ids = [p.stem for p in sorted(image_dir.rglob("*.jpg"))]
    ages = ["-3", "200", *["50"] * (len(ids) - 2)]
    csv.write_text("image_id,age_approximate,sex\n" + "".join(f"{i},{a},male\n" for i, a in zip(ids, ages)))
    before = csv.read_bytes()
    result = run_cli(retrain, [
        "--image_dir", image_dir, "--bottleneck_dir", tmp_path / "bn", "--output_graph", tmp_path / "out" / "g.pb",
        "--output_labels", tmp_path / "out" / "l.txt", "--how_many_training_steps", 10, "--random_seed", 1,
        "--metadata", csv, "--validation_percentage", 0, "--testing_percentage", 0])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "outside 0..120" in line]
    expected = f"warning: {csv}: column 'age_approximate' has 2 age(s) outside 0..120 (e.g. -3, 200); treated as missing"
    assert warned == [expected]
    assert "Metadata column age_approximate: numeric, mean 50.0, sd 1.0 (2 of 8 missing)" in result.stdout
    assert csv.read_bytes() == before
