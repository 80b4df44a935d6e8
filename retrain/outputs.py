"""No output may clobber an input or another output: every path a command writes is checked
against its inputs and its other outputs before any slow work, so a slip of the keyboard
costs one error line, never a photo, a model or an hour of training.

    check_outputs(inputs={"--image_dir": tree, "--labels": labels_file},
                  outputs={"--output_graph": graph, "--output_graph's training plot": plot},
                  folders={"--saved_model_dir": saved_model}, replaced=("--saved_model_dir",))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from retrain.errors import UserError

Given = Path | str | Sequence[Path | str] | None


def check_outputs(inputs: Mapping[str, Given], outputs: Mapping[str, Path | str | None],
                  folders: Mapping[str, Path | str | None] | None = None, replaced: Iterable[str] = ()) -> None:
    """Raise UserError, naming both flags, when an output (a file in `outputs`, a folder in
    `folders`, keyed by the flag that names it) is the same file as an input or another
    output, lies inside an input folder, an output file or a folder in `replaced` (one the
    command clears before writing), is a file where a folder is wanted or the reverse, or
    has a parent folder that cannot be created. Paths left as None are not written."""
    ins = [(flag, _resolved(p)) for flag, value in inputs.items() for p in _as_list(value)]
    files = {flag: _resolved(p) for flag, p in outputs.items() if p is not None}
    dirs = {flag: _resolved(p) for flag, p in (folders or {}).items() if p is not None}
    replaced = set(replaced)
    for flag, path in files.items():
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name")
    for flag, path in dirs.items():
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path} is a file, not a folder; give a folder name")
    written = {**files, **dirs}
    for flag, path in written.items():
        _check_parent(flag, path)
        for in_flag, in_path in ins:
            _check_against_input(flag, path, in_flag, in_path, flag in replaced)
    names = list(written)
    for i, flag in enumerate(names):
        for other in names[i + 1:]:
            _check_pair(other, written[other], flag, written[flag], files, replaced)
            _check_pair(flag, written[flag], other, written[other], files, replaced)


def _as_list(value: Given) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return [v for v in value if v is not None]


def _resolved(path: Path | str) -> Path:
    """Symlinks followed, ~ expanded, relative paths made absolute: two names of one file compare equal."""
    return Path(path).expanduser().resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _kind(path: Path) -> str:
    return "folder" if path.is_dir() else "file"


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and path.is_relative_to(folder)


def _check_against_input(flag: str, path: Path, in_flag: str, in_path: Path, replaced: bool) -> None:
    if _same(path, in_path):
        raise UserError(f"{flag} {path} is the same {_kind(path)} as {in_flag}")
    if in_path.is_dir() and _inside(path, in_path):
        raise UserError(f"{flag} {path} is inside {in_flag} {in_path}; write outputs outside the inputs")
    if replaced and _inside(in_path, path):
        raise UserError(f"{flag} {path} holds {in_flag} {in_path}, and is replaced when written")


def _check_pair(flag: str, path: Path, other: str, other_path: Path, files: Mapping[str, Path],
                replaced: set[str]) -> None:
    """`flag` against `other`, one way round: same path, or inside what `other` writes over."""
    if _same(path, other_path):
        raise UserError(f"{flag} {path} is the same {_kind(path)} as {other}")
    if _inside(path, other_path) and (other in files or other in replaced):
        what = "a file" if other in files else "a folder it replaces"
        raise UserError(f"{flag} {path} is inside {other} {other_path}, which is written as {what}")


def _check_parent(flag: str, path: Path) -> None:
    """The nearest folder that exists must be a writable folder, so the parent can be made."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag} {path}: cannot create its folder ({ancestor} is a file)")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        if ancestor == path.parent:
            raise UserError(f"{flag} {path}: cannot write in {ancestor} (permission denied)")
        raise UserError(f"{flag} {path}: cannot create its folder ({ancestor} is not writable)")
