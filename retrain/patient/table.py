"""Patient metadata (age, sex, site, ...) from a CSV, encoded as a float32 matrix for a
second model input.

Numeric columns become two features (the standardised value and a missing flag);
categorical ones become a one-hot block whose last slot is `unknown`. The encoding is
plain data (`to_json`) so training, evaluation, label_image and a phone app all encode
a row the same way. No TensorFlow here: reading and checking a CSV must stay quick.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from retrain.errors import UserError

MISSING = {"", "unknown", "na", "n/a", "nan", "none"}
ID_COLUMN = "image_id"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
UNKNOWN = "unknown"
JSON_VERSION = 1
MOSTLY_NUMERIC = 0.9
SHOWN_CATEGORIES = 12

Row = dict[str, str]

MAX_AGE = 120  # years: an age column's value outside 0..MAX_AGE is a typo
AGE_COLUMN = re.compile(r"(^|_)age($|_)", re.IGNORECASE)  # age, age_approximate, patient_age; not image, stage


def is_missing(value: str | None) -> bool:
    return value is None or value.strip().lower() in MISSING


def finite_number(value: str) -> float | None:
    """A finite float, or None: 'inf' in a column of ages is a typo, not a value."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class MetadataTable:
    """A metadata CSV as read: raw stripped strings by image id, columns in file order.

    `lines` keeps each id's line number so later checks (kind inference) can point at it.
    """

    path: Path
    columns: tuple[str, ...]
    rows: dict[str, Row]
    lines: dict[str, int] = field(default_factory=dict)
    flag: str = "PatientConfig.files"
    files: dict[str, Path] = field(default_factory=dict)  # image_id -> its file, for a table merged from several

    def file_names(self) -> str:
        return ", ".join(str(p) for p in dict.fromkeys(self.files.values())) if self.files else str(self.path)

    def where(self) -> str:
        return f"{self.flag} {self.file_names()}"

    def line_of(self, image_id: str) -> str:
        line = f"line {self.lines.get(image_id, 0)}"
        return f"{self.files[image_id]} {line}" if image_id in self.files else line


def merge_tables(tables: Sequence[MetadataTable]) -> MetadataTable:
    """Several metadata CSVs as one (e.g. ISIC's training and validation files); an id in
    two of them is an error, since which row is meant would be a guess."""
    if len(tables) == 1:
        return tables[0]
    rows, lines, files, columns = {}, {}, {}, []
    for table in tables:
        columns += [c for c in table.columns if c not in columns]
        for image_id, row in table.rows.items():
            if image_id in rows:
                raise UserError(f"{table.flag}: image_id {image_id!r} is in {files[image_id]} (line {lines[image_id]}) "
                                f"and in {table.path} (line {table.lines.get(image_id, 0)})")
            rows[image_id], lines[image_id], files[image_id] = row, table.lines.get(image_id, 0), table.path
    return MetadataTable(tables[0].path, tuple(columns), rows, lines, tables[0].flag, files)


def read_metadata_csv(path: Path | str, flag: str = "PatientConfig.files") -> MetadataTable:
    path = Path(path).expanduser()
    where = f"{flag} {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{where}: no such file") from None
    except OSError as e:
        raise UserError(f"{where}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{where}: line {line} is not UTF-8 text; save the file as UTF-8 CSV") from None

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: dict[str, Row] = {}
    lines: dict[str, int] = {}
    id_index = 0
    columns: list[str] = []
    next_line = 1
    try:
        for cells in reader:
            line, next_line = next_line, reader.line_num + 1
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            if header is None:
                header = cells
                columns, id_index = _check_header(header, where)
                continue
            if len(cells) > len(header):
                if any(cells[len(header):]):
                    raise UserError(f"{where}: line {line} has {len(cells)} cells but the header has {len(header)}")
                cells = cells[: len(header)]
            cells += [""] * (len(header) - len(cells))
            image_id = cells[id_index]
            if not image_id:
                raise UserError(f"{where}: line {line} has an empty image_id")
            if image_id in rows:
                raise UserError(f"{where}: image_id {image_id} appears twice (lines {lines[image_id]} and {line})")
            rows[image_id] = {name: value for name, value in zip(header, cells) if name != ID_COLUMN}
            lines[image_id] = line
    except csv.Error as e:
        raise UserError(f"{where}: the record from line {next_line} is not valid CSV ({e})") from None
    if header is None:
        raise UserError(f"{where}: the file is empty (expected a header line with {ID_COLUMN})")
    return MetadataTable(path, tuple(columns), rows, lines, flag)


def _check_header(header: list[str], where: str) -> tuple[list[str], int]:
    """The columns besides image_id, and where image_id is."""
    if ID_COLUMN not in header:
        found = ", ".join(name for name in header if name) or "none"
        raise UserError(f"{where}: no {ID_COLUMN} column (found: {found})")
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if not name:
            raise UserError(f"{where}: column {number} of the header has no name")
        if name in seen:
            raise UserError(f"{where}: column {name!r} appears twice in the header (columns {seen[name]} and {number})")
        seen[name] = number
    return [name for name in header if name != ID_COLUMN], header.index(ID_COLUMN)


@dataclass(frozen=True)
class ColumnEncoding:
    """How one column becomes features. Categories are lower-case and sorted; `unknown`
    is never one of them but always the last one-hot slot."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return 2 if self.kind == NUMERIC else len(self.categories) + 1

    @property
    def feature_names(self) -> list[str]:
        if self.kind == NUMERIC:
            return [self.name, f"{self.name}_missing"]
        return [f"{self.name}={category}" for category in (*self.categories, UNKNOWN)]


HOW_TO_ENCODE = {
    "missing": "a value is missing when, stripped and lower-cased, it is one of missing_values",
    NUMERIC: "two features: (value - mean) / std, or 0.0 when missing; then 1.0 when missing, else 0.0",
    CATEGORICAL: "one feature per category, then one for unknown: 1.0 in the slot of the lower-cased value, "
    "or in unknown when the value is missing or not one of categories; 0.0 elsewhere",
    "order": "features are the columns' features concatenated in column order, as float32",
}


@dataclass(frozen=True)
class MetadataEncoding:
    columns: tuple[ColumnEncoding, ...]

    @property
    def width(self) -> int:
        return sum(column.width for column in self.columns)

    @property
    def feature_names(self) -> list[str]:
        return [name for column in self.columns for name in column.feature_names]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    def to_json(self) -> dict:
        """Everything needed to encode a row by hand, e.g. in a phone app."""
        columns = []
        for column in self.columns:
            entry: dict = {"name": column.name, "kind": column.kind}
            if column.kind == NUMERIC:
                entry.update(mean=column.mean, std=column.std)
            else:
                entry["categories"] = list(column.categories)
            entry["features"] = column.feature_names
            columns.append(entry)
        return {
            "version": JSON_VERSION,
            "width": self.width,
            "features": self.feature_names,
            "missing_values": sorted(MISSING),
            "columns": columns,
            "how_to_encode": dict(HOW_TO_ENCODE),
        }

    @classmethod
    def from_json(cls, data: object, source: str = "") -> MetadataEncoding:
        """The inverse of to_json; a damaged entry is the user's problem (a bad model file), not a traceback."""
        try:
            return _from_json(data)
        except KeyError as e:
            detail = f"no {e} entry"
        except (ValueError, TypeError, AttributeError) as e:
            detail = str(e)
        prefix = f"{source}: " if source else ""
        raise UserError(f"{prefix}the model's patient-metadata encoding is damaged ({detail})")


def _from_json(data: object) -> MetadataEncoding:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    if data.get("version") != JSON_VERSION:
        raise ValueError(f"version {data.get('version')!r}, expected {JSON_VERSION}")
    if not isinstance(data["columns"], list) or not data["columns"]:
        raise ValueError("no columns")
    columns = []
    for entry in data["columns"]:
        name, kind = entry["name"], entry["kind"]
        if not isinstance(name, str) or not name or name == ID_COLUMN:
            raise ValueError(f"bad column name {name!r}")
        if kind == NUMERIC:
            mean, std = (_finite(entry[key], f"{name} {key}") for key in ("mean", "std"))
            if std <= 0:
                raise ValueError(f"{name} std is {std}")
            columns.append(ColumnEncoding(name, NUMERIC, mean=mean, std=std))
        elif kind == CATEGORICAL:
            categories = entry["categories"]
            if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
                raise ValueError(f"{name} categories are not a list of strings")
            if len(set(categories)) != len(categories) or any(c != c.strip().lower() or is_missing(c) for c in categories):
                raise ValueError(f"{name} categories are not distinct, lower-case and non-missing")
            columns.append(ColumnEncoding(name, CATEGORICAL, categories=tuple(categories)))
        else:
            raise ValueError(f"column {name} has kind {kind!r}")
    if len({column.name for column in columns}) != len(columns):
        raise ValueError("a column name appears twice")
    encoding = MetadataEncoding(tuple(columns))
    if "features" in data and data["features"] != encoding.feature_names:
        raise ValueError("the feature list does not match the columns")
    if "width" in data and data["width"] != encoding.width:
        raise ValueError(f"width {data['width']!r} does not match the columns ({encoding.width})")
    return encoding


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def _matcher(table: MetadataTable) -> Callable[[str], str | None]:
    """Find an id's row: exact first, then ignoring case (only where that is unambiguous)."""
    folded: dict[str, str | None] = {}
    for image_id in table.rows:
        key = image_id.casefold()
        folded[key] = None if key in folded else image_id
    return lambda name: name if name in table.rows else folded.get(name.casefold())


def _match_image(match, image: Path | str) -> str | None:
    """A row id for an image path: its name without extension, failing that with it. A
    string is already an id."""
    if not isinstance(image, Path):
        return match(image)
    found = match(image.stem)
    return match(image.name) if found is None else found


def _fitting_rows(table: MetadataTable, images: Iterable[Path | str]) -> list[Row | None]:
    match = _matcher(table)
    rows = []
    for image in images:
        found = _match_image(match, image)
        rows.append(None if found is None else table.rows[found])
    return rows


def fit_encoding(
    table: MetadataTable,
    image_ids: Iterable[Path | str],
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    flag_columns: str = "PatientConfig.columns",
    flag_categorical: str = "PatientConfig.categorical",
    flag_numeric: str = "PatientConfig.numeric",
) -> MetadataEncoding:
    """Fit on the training images' rows (image paths matched as match_images matches them,
    strings as row ids; an image without a row is all-missing). The kind of a column is inferred from the whole file, so a
    value only in validation rows cannot flip it."""
    columns = _names(columns)
    categorical, numeric = _names(categorical) or (), _names(numeric) or ()
    chosen = _choose_columns(table, columns, categorical, numeric, flag_columns, flag_categorical, flag_numeric)
    rows = _fitting_rows(table, image_ids)
    encodings = []
    for name in chosen:
        if name in categorical:
            kind = CATEGORICAL
        elif name in numeric:
            _check_all_numbers(table, name, flag_numeric)
            kind = NUMERIC
        else:
            kind = _infer_kind(table, name, flag_categorical)
        values = [row.get(name, "") for row in rows if row is not None]
        values = [value for value in values if not is_missing(value)]
        if kind == NUMERIC:
            numbers = np.array([float(value) for value in values], dtype=np.float64)
            mean = float(numbers.mean()) if numbers.size else 0.0
            std = float(numbers.std()) if numbers.size else 0.0
            encodings.append(ColumnEncoding(name, NUMERIC, mean=mean, std=std if std > 0 else 1.0))
        else:
            categories = tuple(sorted({value.lower() for value in values}))
            encodings.append(ColumnEncoding(name, CATEGORICAL, categories=categories))
    return MetadataEncoding(tuple(encodings))


def impossible_age(column: str, value: str | None) -> bool:
    """A number outside 0..MAX_AGE in an age column: a typo (-5, 200), not an age."""
    number = None if value is None or not AGE_COLUMN.search(column) else finite_number(value)
    return number is not None and not 0 <= number <= MAX_AGE


def without_impossible_ages(table: MetadataTable,
                            columns: Sequence[str] | None = None) -> tuple[MetadataTable, list[str]]:
    """The table with each age outside 0..MAX_AGE made missing (in `columns`, default all), and one
    line per file and column saying how many: as values they would skew the column's mean and land
    in the "80+" or "under 20" band. The same rule in retrain, evaluate and label_image."""
    return _with_missing(table, columns, impossible_age, "age(s) outside 0.." + str(MAX_AGE))


def without_words_for_ages(table: MetadataTable) -> tuple[MetadataTable, list[str]]:
    """The table with each non-number in an age column that holds numbers made missing, and one line
    per file and column: a word there ('fifty', 'adult') is no age band, and as a category it would
    turn the age bands into a table of the words."""
    with_numbers = {column for column in table.columns if AGE_COLUMN.search(column)
                    and any(finite_number(row.get(column, "")) is not None for row in table.rows.values())}

    def word(column: str, value: str | None) -> bool:
        return column in with_numbers and not is_missing(value) and finite_number(value) is None

    return _with_missing(table, sorted(with_numbers), word, "value(s) that are not numbers of years")


def _with_missing(table: MetadataTable, columns: Sequence[str] | None, bad: Callable[[str, str | None], bool],
                  what: str) -> tuple[MetadataTable, list[str]]:
    names = [c for c in table.columns if columns is None or c in _names(columns)]
    found: dict[tuple[Path, str], list[str]] = {}
    rows = {}
    for image_id, row in table.rows.items():
        fixed = dict(row)
        for name in names:
            if bad(name, row.get(name)):
                found.setdefault((table.files.get(image_id, table.path), name), []).append(row[name])
                fixed[name] = ""
        rows[image_id] = fixed
    lines = [f"{path}: column {name!r} has {len(values)} {what} (e.g. {', '.join(values[:3])}); treated as missing"
             for (path, name), values in found.items()]
    return (replace(table, rows=rows) if found else table), lines


def row_without_impossible_ages(row: Row, where: str) -> tuple[Row, list[str]]:
    """label_image's one row, by the rule of without_impossible_ages."""
    lines = [f"{where}: {name} {value} is outside 0..{MAX_AGE}; treated as missing"
             for name, value in row.items() if impossible_age(name, value)]
    return {name: "" if impossible_age(name, value) else value for name, value in row.items()}, lines


def _names(names: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """A lone string is one column name, not a sequence of letters."""
    if names is None:
        return None
    return (names,) if isinstance(names, str) else tuple(names)


def _choose_columns(
    table: MetadataTable,
    columns: Sequence[str] | None,
    categorical: Sequence[str],
    numeric: Sequence[str],
    flag_columns: str,
    flag_categorical: str,
    flag_numeric: str,
) -> list[str]:
    available = ", ".join(table.columns) or "none"
    if columns is None:
        chosen = list(table.columns)
    else:
        chosen = list(columns)
        for name in chosen:
            if name not in table.columns:
                raise UserError(f"{flag_columns}: {table.path} has no column {name!r} (columns: {available})")
        repeated = [name for name, count in Counter(chosen).items() if count > 1]
        if repeated:
            raise UserError(f"{flag_columns}: column {repeated[0]!r} is listed twice")
    if not chosen:
        raise UserError(f"{table.where()}: no metadata columns besides {ID_COLUMN}")
    for flag, names in ((flag_categorical, categorical), (flag_numeric, numeric)):
        for name in names:
            if name not in table.columns:
                raise UserError(f"{flag}: {table.path} has no column {name!r} (columns: {available})")
            if name not in chosen:
                raise UserError(f"{flag}: column {name!r} is not one of {flag_columns} ({', '.join(chosen)})")
    both = [name for name in categorical if name in numeric]
    if both:
        raise UserError(f"column {both[0]!r} is in both {flag_categorical} and {flag_numeric}")
    return chosen


def _non_missing(table: MetadataTable, name: str) -> list[tuple[str, str]]:
    """(where the row is, e.g. "line 7", value) for each non-missing value of the column."""
    return [(table.line_of(image_id), row.get(name, "")) for image_id, row in table.rows.items() if not is_missing(row.get(name))]


def _infer_kind(table: MetadataTable, name: str, flag_categorical: str) -> str:
    """Numeric when every value is a number; a few words among many numbers are more
    likely typos than categories, so that is an error rather than a silent guess."""
    values = _non_missing(table, name)
    words = [(line, value) for line, value in values if finite_number(value) is None]
    if not words:
        return NUMERIC
    if len(values) - len(words) >= MOSTLY_NUMERIC * len(values):
        line, value = words[0]
        others = f" (and {len(words) - 1} other non-number(s))" if len(words) > 1 else ""
        raise UserError(
            f"{table.where()}: column {name!r} looks numeric ({len(values) - len(words)} of {len(values)} values are numbers) "
            f"but {line} has {value!r}{others}; pass {flag_categorical} {name} if it is a category"
        )
    return CATEGORICAL


def _check_all_numbers(table: MetadataTable, name: str, flag_numeric: str) -> None:
    for line, value in _non_missing(table, name):
        if finite_number(value) is None:
            raise UserError(f"{table.where()}: column {name!r} is in {flag_numeric} but {line} has {value!r}, which is not a number")


def encode(encoding: MetadataEncoding, values: Sequence[Row | None], warn: Callable[[str], None], source: str = "") -> np.ndarray:
    """float32 [len(values), width]; None is a row with every value missing."""
    out = np.zeros((len(values), encoding.width), dtype=np.float32)
    unseen: Counter = Counter()
    spelling: dict[tuple[str, str], str] = {}
    prefix = f"{source}: " if source else ""
    start = 0
    for column in encoding.columns:
        slots = {category: index for index, category in enumerate(column.categories)}
        for i, row in enumerate(values):
            raw = "" if row is None else (row.get(column.name) or "").strip()
            missing = is_missing(raw)
            if column.kind == NUMERIC:
                if missing:
                    out[i, start + 1] = 1.0
                    continue
                number = finite_number(raw)
                if number is None:
                    raise UserError(f"{prefix}column {column.name!r}: {raw!r} is not a number")
                out[i, start] = (number - column.mean) / column.std
            else:
                key = raw.lower()
                slot = slots.get(key, len(column.categories))
                if not missing and key not in slots:
                    unseen[column.name, key] += 1
                    spelling.setdefault((column.name, key), raw)
                out[i, start + slot] = 1.0
        start += column.width
    for (name, key), count in unseen.items():
        rows = f" ({count} rows)" if count > 1 else ""
        warn(f"{prefix}{name}: {spelling[name, key]!r} was not seen in training; treated as unknown{rows}")
    return out


def match_images(table: MetadataTable, image_paths: Iterable[Path | str]) -> tuple[list[Row | None], int, int]:
    """Each image's row by file name without extension (or, failing that, with it);
    also how many images have no row and how many rows have no image."""
    match = _matcher(table)
    rows: list[Row | None] = []
    used: set[str] = set()
    without_row = 0
    for image_path in image_paths:
        found = _match_image(match, Path(image_path))
        if found is None:
            without_row += 1
            rows.append(None)
        else:
            used.add(found)
            rows.append(table.rows[found])
    return rows, without_row, len(table.rows) - len(used)


def parse_key_values(text: str, encoding: MetadataEncoding, flag: str = "Classifier.patient_metadata") -> Row:
    """'age_approximate=55,sex=female' as a row; columns not given are missing."""
    names = encoding.column_names
    given: Row = {}
    for piece in text.split(","):
        if not piece.strip():
            continue
        if "=" not in piece:
            raise UserError(f"{flag} {text!r}: {piece.strip()!r} is not NAME=VALUE")
        name, value = (part.strip() for part in piece.split("=", 1))
        if not name:
            raise UserError(f"{flag} {text!r}: {piece.strip()!r} has no column name before '='")
        if name in given:
            raise UserError(f"{flag} {text!r}: {name} is given twice")
        if name not in names:
            raise UserError(f"{flag} {text!r}: the model has no metadata column {name!r} (columns: {', '.join(names)})")
        given[name] = value
    return {name: given.get(name, "") for name in names}


def _short(number: float) -> str:
    if abs(number) >= 100:
        return f"{number:.0f}"
    return f"{number:.1f}" if abs(number) >= 1 or number == 0 else f"{number:.3g}"


def describe(encoding: MetadataEncoding, table: MetadataTable | None = None,
             image_ids: Sequence[Path | str] | None = None) -> list[str]:
    """One line per column for the training log: kind, statistics or categories, and
    how many of the given images lack a value."""
    rows = _fitting_rows(table, image_ids) if table is not None and image_ids is not None else None
    lines = []
    for column in encoding.columns:
        if column.kind == NUMERIC:
            if rows is not None and all(row is None or is_missing(row.get(column.name)) for row in rows):
                text = f"{column.name}: numeric, no values (always missing)"
            else:
                text = f"{column.name}: numeric, mean {_short(column.mean)}, sd {_short(column.std)}"
        elif column.categories:
            shown = list(column.categories[:SHOWN_CATEGORIES])
            if len(column.categories) > SHOWN_CATEGORIES:
                shown.append(f"... {len(column.categories) - SHOWN_CATEGORIES} more")
            text = f"{column.name}: categorical: {', '.join(shown)} (+ unknown)"
        else:
            text = f"{column.name}: categorical, no values (always unknown)"
        if rows is not None:
            missing = sum(1 for row in rows if row is None or is_missing(row.get(column.name)))
            text += f" ({missing} of {len(rows)} missing)"
        lines.append(text)
    return lines


def fed_rows(encoding: MetadataEncoding, rows: np.ndarray | None, count: int) -> np.ndarray:
    """The encoded rows fed beside `count` images: as given, or every value missing."""
    if rows is None:
        return encode(encoding, [None] * count, warn=lambda _: None)
    return np.asarray(rows, np.float32)
