"""Subgroups: the figures of each group of patients (by sex, by age band, by any other
categorical column of the patient metadata), since a model can do well overall and badly for some.

Every group is shown, however small: a figure with fewer than MIN_COUNT positives or
negatives behind it is marked "too few to say" rather than hidden, so a reader sees where
the evidence is missing. AUC intervals are Hanley & McNeil's (metrics.auc_interval), rates'
are Wilson's (metrics.Rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retrain.patient.table import AGE_COLUMN, finite_number, is_missing
from retrain.metrics import (
    Rate,
    auc_interval,
    auc_classes,
    roc_auc,
    sensitivity_specificity,
)
from retrain.decisions.operating_points import OperatingPoint

MIN_COUNT = 5  # positives or negatives below which a figure is "too few to say"
MAX_GROUPS = 12  # a categorical column with more values (an id, free text) is not a grouping
UNKNOWN = "unknown"
AGE_BANDS = ((20, "under 20"), (40, "20-39"), (60, "40-59"), (80, "60-79"), (math.inf, "80+"))
TOO_FEW = "too few to say"
AUC_INTERVAL = "Hanley-McNeil"
LEGEND = (f"AUC with its 95% interval ({AUC_INTERVAL}), sensitivity and specificity with 95% Wilson intervals; "
          f"'{TOO_FEW}' where fewer than {MIN_COUNT} positives or {MIN_COUNT} negatives are behind a figure")


@dataclass(frozen=True)
class Grouping:
    """One metadata column's groups: (name, mask over the evaluated images), in reading order."""

    column: str
    kind: str  # "age band" or "category"
    groups: tuple[tuple[str, np.ndarray], ...]


def _value(row: dict | None, column: str) -> str | None:
    value = None if row is None else row.get(column)
    return None if is_missing(value) else value.strip()


def age_band(value: str | None) -> str:
    number = None if value is None else finite_number(value)
    if number is None:
        return UNKNOWN
    return next(name for limit, name in AGE_BANDS if number < limit)


def _masks(names: list[str], order: list[str]) -> tuple[tuple[str, np.ndarray], ...]:
    """The non-empty groups in `order`, `unknown` last."""
    names_array = np.array(names, dtype=object)
    present = [name for name in order if name != UNKNOWN and name in names] + ([UNKNOWN] if UNKNOWN in names else [])
    return tuple((name, names_array == name) for name in present)


def grouping(column: str, rows: list[dict | None]) -> Grouping | str:
    """The column's groups, or why it gives none (one line)."""
    values = [_value(row, column) for row in rows]
    given = [v for v in values if v is not None]
    if not given:
        return f"column {column!r}: no values"
    if all(finite_number(v) is not None for v in given):
        if not AGE_COLUMN.search(column):
            return f"column {column!r}: numeric and not an age"
        return Grouping(column, "age band", _masks([age_band(v) for v in values], [n for _, n in AGE_BANDS]))
    names = [UNKNOWN if v is None else v.lower() for v in values]
    categories = sorted(set(names) - {UNKNOWN})
    if len(categories) > MAX_GROUPS:
        return f"column {column!r}: {len(categories)} values, more than {MAX_GROUPS}"
    return Grouping(column, "category", _masks(names, categories))


@dataclass(frozen=True)
class Auc:
    value: float
    low: float
    high: float
    positives: int
    negatives: int

    @property
    def too_few(self) -> bool:
        return min(self.positives, self.negatives) < MIN_COUNT

    def as_dict(self) -> dict:
        return {"value": self.value, "interval": [self.low, self.high], "positives": self.positives,
                "negatives": self.negatives, "too_few": self.too_few}

    def cell(self) -> str:
        value = "n/a" if math.isnan(self.value) else f"{self.value:.3f}"
        return f"{value}: {TOO_FEW}" if self.too_few else f"{value} ({self.low:.2f}-{self.high:.2f})"


def measure_auc(scores: np.ndarray, positive: np.ndarray) -> Auc:
    positive = np.asarray(positive, bool)
    return Auc(roc_auc(scores, positive), *auc_interval(scores, positive), int(positive.sum()), int((~positive).sum()))


def rate_cell(rate: Rate) -> str:
    """ "93.3% (28/30, 79-98%)"; with fewer than MIN_COUNT behind it, marked too few to say."""
    if not rate.count:
        return f"none: {TOO_FEW}"
    if rate.count < MIN_COUNT:
        return f"{100 * rate.value:.1f}% ({rate.successes}/{rate.count}): {TOO_FEW}"
    return f"{100 * rate.value:.1f}% ({rate.successes}/{rate.count}, {100 * rate.low:.0f}-{100 * rate.high:.0f}%)"


def rate_dict(rate: Rate) -> dict:
    return {**rate.as_dict(), "too_few": rate.count < MIN_COUNT}


def point_name(point: OperatingPoint) -> str:
    return f"{point.label} >= {point.threshold:.3g}"


@dataclass(frozen=True)
class Group:
    name: str
    count: int
    aucs: dict[str, Auc]  # by class
    rates: tuple[tuple[OperatingPoint, Rate, Rate], ...]  # (point, sensitivity, specificity)

    def as_dict(self) -> dict:
        return {"group": self.name, "count": self.count, "auc": {k: a.as_dict() for k, a in self.aucs.items()},
                "operating_points": [{"label": p.label, "threshold": p.threshold, "sensitivity": rate_dict(s),
                                      "specificity": rate_dict(c)} for p, s, c in self.rates]}


@dataclass(frozen=True)
class SubgroupColumn:
    """One metadata column's groups, measured."""

    column: str
    kind: str
    groups: tuple[Group, ...]

    def tables(self) -> list[tuple[str, list[str], list[list[str]]]]:
        """(title, header, rows): the AUCs, then one table per operating point; narrow, however
        many classes and points there are."""
        by = f"Subgroups by {self.column} ({self.kind})"
        first = ["group", "N"]
        tables = [(f"{by}: AUC, one class against the rest", first + list(self.groups[0].aucs),
                   [[g.name, str(g.count), *(a.cell() for a in g.aucs.values())] for g in self.groups])]
        for index, (point, _, _) in enumerate(self.groups[0].rates):
            rows = [[g.name, str(g.count), rate_cell(g.rates[index][1]), rate_cell(g.rates[index][2])]
                    for g in self.groups]
            tables.append((f"{by}: operating point {point_name(point)}", first + ["sensitivity", "specificity"], rows))
        return tables


@dataclass(frozen=True)
class Subgroups:
    columns: tuple[SubgroupColumn, ...]
    skipped: tuple[str, ...]  # one line per column that gives no groups

    def as_dict(self) -> dict:
        return {"auc_interval": AUC_INTERVAL, "rate_interval": "Wilson", "too_few_below": MIN_COUNT,
                "columns": [{"column": c.column, "kind": c.kind, "groups": [g.as_dict() for g in c.groups]}
                            for c in self.columns],
                "skipped": list(self.skipped)}

    def lines(self) -> list[str]:
        lines = [f"Subgroups: {LEGEND}"]
        for column in self.columns:
            for title, header, rows in column.tables():
                lines += [title, *_aligned(header, rows)]
        return lines + [f"Subgroups: {reason}; no groups" for reason in self.skipped]


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            .rstrip() for r in [header, *rows]]


def measure_group(name: str, mask: np.ndarray, probabilities: np.ndarray, true: np.ndarray, labels: list[str],
                  points: tuple[OperatingPoint, ...]) -> Group:
    scores, classes = probabilities[mask], true[mask]
    aucs = {labels[i]: measure_auc(scores[:, i], classes == i) for i in auc_classes(labels)}
    rates = tuple((p, *sensitivity_specificity(scores[:, labels.index(p.label)], classes == labels.index(p.label),
                                               p.threshold)) for p in points)
    return Group(name, int(mask.sum()), aucs, rates)


def measure_subgroups(rows: list[dict | None], probabilities: np.ndarray, true: np.ndarray, labels: list[str],
                      points: tuple[OperatingPoint, ...]) -> Subgroups:
    """`rows`: each image's metadata row (None: no row, so unknown in every column); `points`:
    the stored operating points whose class is among `labels`."""
    columns = list(dict.fromkeys(column for row in rows if row for column in row))
    columns_measured, skipped = [], []
    for column in columns:
        found = grouping(column, rows)
        if isinstance(found, str):
            skipped.append(found)
            continue
        groups = tuple(measure_group(name, mask, probabilities, true, labels, points) for name, mask in found.groups)
        columns_measured.append(SubgroupColumn(column, found.kind, groups))
    return Subgroups(tuple(columns_measured), tuple(skipped))


def validation_subgroups(probabilities: np.ndarray, true: np.ndarray, rows: list[dict | None], labels: list[str],
                         points: tuple[OperatingPoint, ...], log) -> Subgroups:
    """The validation figures by sex, age band and other categories, logged as evaluate prints
    them, for the model card."""
    subgroups = measure_subgroups(rows, probabilities, true, labels, points)
    for line in subgroups.lines():
        log(line)
    return subgroups
