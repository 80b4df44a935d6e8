"""The flag reference, docs/flags.md, made from the click commands themselves, so it says
what `--help` says. Regenerate it with:

    python -m retrain.cli.reference > docs/flags.md

The text depends on the commands only: no path of this machine (the home folder is
written `~`), no terminal width, the commands and their flags in their own order."""

from __future__ import annotations

import re
import sys
from pathlib import Path, PurePath

import click

from retrain.cli import ensemble, evaluate, export_tflite, label_image, prepare_isic, retrain, serve, set_operating_point

# The console commands, in the order the reference gives them (setup.cfg's entry points).
COMMANDS = (
    ("retrain", retrain),
    ("label_image", label_image),
    ("export_tflite", export_tflite),
    ("prepare_isic", prepare_isic),
    ("evaluate", evaluate),
    ("set_operating_point", set_operating_point),
    ("serve", serve),
    ("ensemble", ensemble),
)

REGENERATE = "python -m retrain.cli.reference > docs/flags.md"

_UNSET = getattr(click.core, "UNSET", None)
_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][A-Za-z0-9_-]*(?:/--[A-Za-z][A-Za-z0-9_-]*)?)")
_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")


def _text(words: str) -> str:
    """Help text as one line of Markdown: runs of white space made one space, flag names
    as code, and the characters Markdown (or a table) would read escaped."""
    words = " ".join(words.split())
    pieces = _FLAG.split(words)
    return "".join(f"`{piece}`" if index % 2 else _SPECIAL.sub(r"\\\1", piece) for index, piece in enumerate(pieces))


def _code(words: str) -> str:
    """A code span inside a table cell ('|' still has to be escaped there)."""
    return "`" + words.replace("|", "\\|") + "`"


def _machine_free(value: str) -> str:
    """The home folder, should a default ever hold it, written as ~."""
    home = str(Path.home())
    return value.replace(home, "~") if len(home) > 1 else value


def _help_text(command: click.Command) -> str:
    """The command's docstring as click shows it (up to a \\f), paragraphs kept."""
    text = (command.help or command.short_help or "").split("\f")[0]
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n\n".join(_text(p) for p in paragraphs)


def _type(param: click.Parameter) -> str:
    kind = param.type
    if isinstance(param, click.Option) and param.is_flag:
        words = "on/off" if param.secondary_opts else "flag"
    elif isinstance(kind, click.Choice):
        words = " \\| ".join(_code(str(choice)) for choice in kind.choices)
    elif isinstance(kind, (click.IntRange, click.FloatRange)):
        name = "integer" if isinstance(kind, click.IntRange) else "number"
        low = "" if kind.min is None else f"{kind.min} {'<' if kind.min_open else '<='} "
        high = "" if kind.max is None else f" {'<' if kind.max_open else '<='} {kind.max}"
        words = f"{name}, {low}x{high}" if low or high else name
    else:
        words = {"integer": "integer", "float": "number", "path": "path", "file": "file", "text": "text",
                 "boolean": "true/false"}.get(kind.name, kind.name)
    if getattr(param, "multiple", False):
        words += ", repeatable"
    if param.required:
        words += ", required"
    return words


def _default(param: click.Parameter, context: click.Context) -> str:
    if isinstance(param, click.Option) and isinstance(param.show_default, str):
        return _text(_machine_free(param.show_default))
    default = param.get_default(context, call=False)
    if default is _UNSET or default is None or default == () or default == []:
        return ""
    if callable(default):
        return "computed when run"
    if isinstance(param, click.Option) and param.is_flag and isinstance(default, bool):
        if not param.expose_value:  # --help: an action, not a setting
            return ""
        return "on" if default else "off"
    values = default if isinstance(default, (list, tuple)) else [default]
    shown = [value.as_posix() if isinstance(value, PurePath) else str(value) for value in values]
    return ", ".join(_code(_machine_free(value)) for value in shown)


def _spellings(param: click.Parameter, context: click.Context) -> str:
    if not isinstance(param, click.Option):
        return _code(param.human_readable_name)
    opts = param.opts
    if param is context.command.get_help_option(context):  # click makes its spellings from a set: take the given order
        opts = sorted(opts, key=context.help_option_names.index)
    names = [", ".join(_code(opt) for opt in opts)]
    if param.secondary_opts:
        names.append(", ".join(_code(opt) for opt in param.secondary_opts))
    return " / ".join(names)


def render_command(name: str, command: click.Command) -> str:
    """One command: its heading, usage, help text and a table of its options."""
    settings = {**command.context_settings, "terminal_width": 80, "max_content_width": 80}
    context = click.Context(command, info_name=name, **settings)
    params = [p for p in command.get_params(context) if not getattr(p, "hidden", False)]
    lines = [f"## {name}", "", "```", " ".join([name, *command.collect_usage_pieces(context)]), "```", ""]
    help_text = _help_text(command)
    if help_text:
        lines += [help_text, ""]
    arguments = [p for p in params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["| argument | type |", "| --- | --- |"]
        lines += [f"| {_spellings(p, context)} | {_type(p)} |" for p in arguments]
        lines.append("")
    options = [p for p in params if isinstance(p, click.Option)]
    if options:
        lines += ["| flag | type | default | what it does |", "| --- | --- | --- | --- |"]
        lines += [f"| {_spellings(p, context)} | {_type(p)} | {_default(p, context)} | {_text(p.help or '')} |" for p in options]
        lines.append("")
    return "\n".join(lines)


def render(commands=COMMANDS) -> str:
    """The whole reference as Markdown, ending in one newline."""
    lines = [
        "# Flags",
        "",
        f"Generated from the commands' own flags by `{REGENERATE}`; do not edit it by hand.",
        "A flag spelled with underscores (`--image_dir`) also takes dashes (`--image-dir`);",
        "`COMMAND --help` prints the same.",
        "",
        *[f"- [{name}](#{name})" for name, _ in commands],
        "",
    ]
    text = "\n".join(lines) + "\n" + "\n".join(render_command(name, command) for name, command in commands)
    return text.rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render().encode("utf-8"))
