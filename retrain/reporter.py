"""Where a long run says what it is doing: log lines, warnings, progress. The command line
passes its console; from Python the default prints lines and shows no progress."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable


def _print_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Reporter:
    log: Callable[[str], None] = print
    warn: Callable[[str], None] = _print_warning
    # (total, label, unit) -> a function taking how many more are done; None: no progress shown
    progress: Callable[..., Callable[[int], None]] | None = None

    def bar(self, total: int, label: str, unit: str = "images") -> Callable[[int], None] | None:
        return self.progress(total, label, unit) if self.progress else None
