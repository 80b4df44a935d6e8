"""Does the fast tier exercise every module of retrain? Runs `python -m pytest -m "not slow"` under
coverage and lists each module none of whose function bodies ran: importing a module runs its
`def` lines, so a module counts as exercised only when code inside one of its functions ran.

    python .ci/fast_tier_coverage.py [more pytest arguments]

Needs `pip install coverage`. Exits 1 if a module with functions was not exercised. Code run in a
subprocess (the console scripts some tests start) is not measured, so it cannot count."""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent


def function_body_lines(path: Path) -> set[int]:
    """The lines of every statement inside a function or method of the module."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for statement in node.body:
                lines.update(range(statement.lineno, (statement.end_lineno or statement.lineno) + 1))
    return lines


def executed_lines(pytest_args: list[str]) -> tuple[int, dict[Path, set[int]]]:
    """Run the fast tier under coverage; its exit status and the lines each retrain file ran."""
    data_file = Path(tempfile.mkdtemp()) / ".coverage"
    status = subprocess.call([sys.executable, "-m", "coverage", "run", f"--data-file={data_file}",
                              f"--source={ROOT / 'retrain'}", "-m", "pytest", "-m", "not slow", "-q",
                              "-p", "no:cacheprovider", *pytest_args], cwd=ROOT)
    data = coverage.Coverage(data_file=str(data_file)).get_data()
    data.read()
    return status, {Path(name).resolve(): set(data.lines(name) or ()) for name in data.measured_files()}


def main() -> int:
    status, executed = executed_lines(sys.argv[1:])
    unexercised, without_functions = [], []
    for path in sorted((ROOT / "retrain").rglob("*.py")):
        body = function_body_lines(path)
        ran = executed.get(path.resolve(), set())
        name = str(path.relative_to(ROOT))
        if not body:
            without_functions.append(f"{name} ({'imported' if ran else 'never imported'})")
        elif not body & ran:
            unexercised.append(name)
    print(f"\npytest exit status: {status}")
    print("Modules without functions (counted by import): " + (", ".join(without_functions) or "none"))
    print("Modules whose functions the fast tier never ran: " + (", ".join(unexercised) or "none"))
    return 1 if unexercised or status != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
