"""fit_encoding matches training images to patient rows as match_images does."""

from pathlib import Path

import numpy as np

from retrain.data.dataset import Split
from retrain.patient.encoded_sets import Columns, encode_patients
from retrain.patient.table import fit_encoding, read_metadata_csv
from retrain.reporter import Reporter


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
