"""No output may clobber an input or another output: every path a command writes is checked
against its inputs and its other outputs before any slow work, so a slip of the keyboard
costs one error line, never a photo, a model or an hour of training.

    check_outputs(inputs={"DataConfig.image_dir": tree, "evaluate.labels": labels_file},
                  outputs={"ExportConfig.output_graph": graph, "ExportConfig.output_graph's training plot": plot},
                  folders={"ExportConfig.saved_model_dir": saved_model}, replaced=("ExportConfig.saved_model_dir",))
"""

from __future__ import annotations

import os
import tempfile
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
    has a parent folder that cannot be created or written in. An output is checked where it is
    written: through its folders' symlinks, not its own; an output file (or replaced folder) that
    is itself a symlink is refused, since writing would replace the link. Paths left as None
    are not written."""
    ins = [(flag, _resolved(p), _absolute(p)) for flag, value in inputs.items() for p in _as_list(value)]
    replaced = set(replaced)
    files = {flag: _written_at(p) for flag, p in outputs.items() if p is not None}
    dirs = {flag: _written_at(p) if flag in replaced else _resolved(p)
            for flag, p in (folders or {}).items() if p is not None}
    named = {flag: _absolute(p) for flag, p in {**outputs, **(folders or {})}.items() if p is not None}
    for flag, path in files.items():
        if path.is_dir():
            raise UserError(f"{flag} {path} is a folder; give a file name")
    for flag, path in dirs.items():
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {path} is a file, not a folder; give a folder name")
    written = {**files, **dirs}
    for flag, path in written.items():
        for in_flag, in_path, in_named in ins:
            _check_against_input(flag, path, in_flag, in_path, flag in replaced)
            if in_path.is_dir() and _inside(named[flag], in_named):
                raise UserError(f"{flag} {named[flag]} is inside {in_flag} {in_named}; write outputs outside the inputs")
    names = list(written)
    for i, flag in enumerate(names):
        for other in names[i + 1:]:
            _check_pair(other, written[other], flag, written[flag], files, replaced)
            _check_pair(flag, written[flag], other, written[other], files, replaced)
    for flag, path in written.items():
        if path.is_symlink():
            raise UserError(f"{flag} {path} is a symlink (to {path.resolve()}); writing would replace the link, not "
                            "write through it: give the path it points to, or another name")
        _check_parent(flag, path)


def _as_list(value: Given) -> list:
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [value]
    return [v for v in value if v is not None]


def _resolved(path: Path | str) -> Path:
    """Symlinks followed, ~ expanded, relative paths made absolute: two names of one file compare equal."""
    return Path(path).expanduser().resolve()


def _written_at(path: Path | str) -> Path:
    """Where a writer puts `path`: the symlinks of its folders followed but not its own, since
    writing a file (or replacing a folder) replaces a link rather than writing through it."""
    path = Path(path).expanduser().absolute()
    return path.resolve() if path.name == ".." else path.parent.resolve() / path.name


def _absolute(path: Path | str) -> Path:
    """The path as named, made absolute: inside a tree by name is inside it, even through a symlinked folder."""
    return Path(os.path.abspath(Path(path).expanduser()))


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
    """The nearest folder that exists must be a folder a file can be made in (tried, since
    permission bits say nothing for root or on /proc), so the parent can be made."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{flag} {path}: cannot create its folder ({ancestor} is a file)")
    try:
        handle, probe = tempfile.mkstemp(prefix=".retrain-write-check.", dir=ancestor)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        if ancestor == path.parent:
            raise UserError(f"{flag} {path}: cannot write in {ancestor} ({reason})") from None
        raise UserError(f"{flag} {path}: cannot create its folder ({ancestor} is not writable: {reason})") from None
    os.close(handle)
    os.unlink(probe)
