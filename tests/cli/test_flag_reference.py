"""docs/flags.md is the text retrain.cli.reference makes from the click commands, so the
flag reference cannot drift from --help."""

from __future__ import annotations

from pathlib import Path

import click

from retrain.cli.reference import COMMANDS, REGENERATE, render, render_command

FLAGS_MD = Path(__file__).resolve().parents[2] / "docs" / "flags.md"


def _row(text: str, flag: str) -> list[str]:
    """The cells of the table row whose first cell starts with the code span `flag`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| `{flag}`")]
    assert len(rows) == 1, f"one row for {flag} expected, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def test_docs_flags_md_is_the_generated_reference():
    assert FLAGS_MD.is_file(), f"docs/flags.md is missing; make it with: {REGENERATE}"
    assert FLAGS_MD.read_text(encoding="utf-8") == render(), \
        f"docs/flags.md differs from the flags of the commands; regenerate it with: {REGENERATE}"


def test_the_reference_gives_how_many_training_steps_with_its_default():
    spellings, kind, default, _ = _row(render(), "--how_many_training_steps")
    assert spellings == "`--how_many_training_steps`, `--how-many-training-steps`"
    assert kind == "integer"
    assert default == "`4000`"


def test_the_reference_has_every_command_once():
    text = render()
    for name, _ in COMMANDS:
        assert text.count(f"\n## {name}\n") == 1
        assert f"- [{name}](#{name})" in text


def test_a_command_renders_its_help_choices_switches_and_escapes():
    @click.command()
    @click.option("--mode", type=click.Choice(["a", "b|c"]), default="a", help="Pick <one> | see --other_flag.")
    @click.option("--turn/--no_turn", default=True, help="On by default.")
    @click.option("--out", type=click.Path(path_type=Path), default=Path.home() / "x.txt", required=True)
    def tool(mode, turn, out):
        """Do one thing.

        Then another."""

    text = render_command("tool", tool)
    assert "Do one thing.\n\nThen another." in text
    assert _row(text, "--mode") == ["`--mode`", "`a` \\| `b\\|c`", "`a`", "Pick \\<one\\> \\| see `--other_flag`."]
    assert _row(text, "--turn")[1:3] == ["on/off", "on"]
    assert _row(text, "--out")[1:3] == ["path, required", "`~/x.txt`"]


def test_a_command_renders_ranges_arguments_and_leaves_out_hidden_flags():
    @click.command()
    @click.argument("table", type=click.Path())
    @click.option("--steps", type=click.IntRange(min=1), default=3)
    @click.option("--share", type=click.FloatRange(0, 1, max_open=True), default=lambda: 0.5)
    @click.option("--secret", hidden=True)
    def tool(**flags):
        """Shown.\f
        Not shown."""

    text = render_command("tool", tool)
    assert "tool [OPTIONS] TABLE" in text and "| `TABLE` | path, required |" in text
    assert _row(text, "--steps")[1:3] == ["integer, 1 <= x", "`3`"]
    assert _row(text, "--share")[1:3] == ["number, 0 <= x < 1", "computed when run"]
    assert "--secret" not in text and "Not shown" not in text
