"""The patient metadata of a run's sets: the tables read and checked before any slow work,
the encoding fitted on the training images only, then every set's images encoded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.data.dataset import Split
from retrain.patient.table import (
    MetadataEncoding,
    MetadataTable,
    describe,
    encode,
    fit_encoding,
    match_images,
    merge_tables,
    read_metadata_csv,
    without_impossible_ages,
)
from retrain.reporter import Reporter


@dataclass(frozen=True)
class Columns:
    """Which columns of the patient metadata the model takes, and how each is encoded."""

    columns: tuple[str, ...] | None = None  # None: every column but image_id
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()

    def lists(self) -> tuple:
        return (None if self.columns is None else list(self.columns)), list(self.categorical), list(self.numeric)


def read_patient_table(files: tuple[Path, ...], columns: Columns, warn) -> MetadataTable:
    """The patient-metadata tables, merged; a column typo fails here, and ages outside 0..120
    are made missing, with one line to `warn` per file and column."""
    table = merge_tables([read_metadata_csv(path) for path in files])
    fit_encoding(table, list(table.rows), *columns.lists())
    table, lines = without_impossible_ages(table, columns.columns)
    for line in lines:
        warn(line)
    return table


@dataclass(frozen=True)
class EncodedPatients:
    encoding: MetadataEncoding
    rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # encoded rows of the training, validation and test images


def encode_patients(table: MetadataTable, columns: Columns, split: Split, reporter: Reporter) -> EncodedPatients:
    """Fit the encoding on the training images only (means, categories), then encode every set."""
    training_ids = [path for path, _ in split.training]  # matched to rows as match_images does
    encoding = fit_encoding(table, training_ids, *columns.lists())
    for line in describe(encoding, table, training_ids):
        reporter.log(f"Metadata column {line}")
    sets = (split.training, split.validation, split.test)
    every_path = [path for pairs in sets for path, _ in pairs]
    rows, without_row, unused_rows = match_images(table, every_path)
    reporter.log(f"Metadata: {len(every_path) - without_row} of {len(every_path)} images have a row in "
                 f"{table.file_names()}"
                 + (f"; {without_row} without one count as all missing" if without_row else "")
                 + (f"; {unused_rows} rows match no image and are ignored" if unused_rows else ""))
    encoded = encode(encoding, rows, reporter.warn, table.where())
    ends = np.cumsum([len(pairs) for pairs in sets])
    return EncodedPatients(encoding, tuple(np.split(encoded, ends[:-1])))


def metadata_rows(table: MetadataTable, pairs: list[tuple[Path, int]]) -> list:
    """Each image's raw patient metadata row (None where the table has none), for subgroups."""
    return match_images(table, [path for path, _ in pairs])[0]
