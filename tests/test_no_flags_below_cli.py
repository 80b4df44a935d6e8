"""The library speaks in its own names: outside retrain/cli/, no string literal (message,
docstring or f-string) names a command-line `--flag`, unless a comment on its line or the line
before says why (a model card sentence that tells the reader which command to run, say).
Messages name `ConfigClass.field` or `function.parameter`, which the CLI turns into flags."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import retrain

PACKAGE = Path(retrain.__file__).parent
FLAG = re.compile(r"(?<![\w-])--(?:[a-z][a-z0-9_]{2,}|\{\})")  # --{} is an f-string's --{name}


def _comment_lines(source: str) -> set[int]:
    return {token.start[0] for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT}


def _literals(tree: ast.AST):
    """(first line, last line, text) of each string literal; an f-string is one literal, each
    of its replacement fields written {}."""
    inside_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            inside_fstrings |= {id(value) for value in node.values}
            yield node.lineno, node.end_lineno, "".join(
                value.value if isinstance(value, ast.Constant) else "{}" for value in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            yield node.lineno, node.end_lineno, node.value


def flag_literals(source: str) -> list[tuple[int, str]]:
    """(line, flag) of each literal naming a flag with no comment on its lines or the line before."""
    comments = _comment_lines(source)
    found = []
    for first, last, text in _literals(ast.parse(source)):
        flags = FLAG.findall(text)
        if flags and not comments & set(range(first - 1, last + 1)):
            found.append((first, flags[0]))
    return sorted(found)


def test_no_string_literal_below_the_cli_names_a_flag_without_a_comment_saying_why():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        if relative.parts[1] == "cli":
            continue
        found += [f"{relative}:{line}: {flag}" for line, flag in flag_literals(path.read_text(encoding="utf-8"))]
    assert not found, ("string literals naming a --flag below retrain/cli/ (name the config field or API "
                       "parameter instead, e.g. TrainingConfig.steps, or say why in a comment):\n" + "\n".join(found))


def test_the_scan_finds_flags_in_messages_docstrings_and_fstrings_and_accepts_a_comment():
    source = '''
def f(x):
    """Reads --image_dir."""
    raise ValueError(f"--learning_rate {x}: too high")
    raise ValueError(f"--{x} must be a number, not {x}--{x}")

ok = "TrainingConfig.steps must be at least 1"
told = "run retrain --operating_point"  # a sentence of the model card, for a command-line reader
# the reader runs the command
also_told = ("evaluate "
             "--report")
dashes = "a -- b, ---, x--y"
key = f"{x}-{x}-copy{x}"
'''
    assert flag_literals(source) == [(3, "--image_dir"), (4, "--learning_rate"), (5, "--{}")]
