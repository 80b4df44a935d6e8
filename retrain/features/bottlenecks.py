"""A run's bottlenecks: every image of its trees through the backbone once, reused from the
cache where it can be, with what that cost told to the reporter."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain import paths
from retrain.reporter import Reporter


@dataclass(frozen=True)
class Features:
    """Every readable image's bottleneck, and what extracting them cost."""

    by_path: dict[Path, np.ndarray]
    computed: int
    reused: int
    failures: int
    cache: object  # the BottleneckCache, for distorted copies
    fingerprints: dict  # path -> copy fingerprint (retrain.data.duplicates), so the copy check reads no image

    def counts_only(self) -> Features:
        """Without the rows and fingerprints, once the sets' arrays hold them: the feature
        matrix is then kept once, not twice."""
        return dataclasses.replace(self, by_path={}, fingerprints={})


def extract_features(all_paths: list[Path], backbone, bottleneck_dir: Path | None, reporter: Reporter) -> Features:
    from retrain.features.cache import open_cache
    from retrain.features.extraction import compute_bottlenecks

    cache = open_cache(bottleneck_dir or paths.default_bottleneck_dir(), backbone)
    extraction = compute_bottlenecks(all_paths, backbone, cache, progress=reporter.bar(len(all_paths), "Bottlenecks"))
    for failure in extraction.failures:
        reporter.warn(f"skipped {failure.path}: {failure.reason}")
    reporter.log(
        f"Bottlenecks: {extraction.reused} reused, {extraction.computed} computed, "
        f"{len(extraction.failures)} failed; cache {cache.root}"
        + (f"; computed with {extraction.engine}" if extraction.engine else "")
    )
    if extraction.engine_note:
        reporter.log(extraction.engine_note)
    by_path = {path: extraction.features[i] for i, path in enumerate(all_paths) if extraction.ok[i]}
    return Features(by_path, extraction.computed, extraction.reused, len(extraction.failures), cache,
                    extraction.fingerprints)
