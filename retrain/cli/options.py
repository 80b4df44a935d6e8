"""Flag spellings shared by the commands: tensorflow-for-poets' underscores, dashes too. An
option is made from its entry in the field table (retrain.cli.fields), and takes its default
from the config field it sets: configs are the one place defaults are written."""

from __future__ import annotations

from pathlib import Path

import click

from retrain.cli.fields import Field


def option(field: Field, *args, **kwargs):
    """An option spelled --name_with_underscores, also accepted as --name-with-dashes, with the
    default of its config field unless one is given."""
    name = field.flag
    if "default" not in kwargs and field.has_default:
        kwargs["default"] = field.default
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return click.option(*spellings, name, *args, **kwargs)



def switch(field: Field, help: str):
    """An on/off flag, --name or --no_name (dashed spellings too), so a recipe's setting can be turned off."""
    name = field.flag
    dashed = name.replace("_", "-")
    spellings = [f"--{name}/--no_{name}"] + ([f"--{dashed}/--no-{dashed}"] if dashed != name else [])
    return click.option(*spellings, name, default=field.default, help=help)



PATH = click.Path(path_type=Path)


def with_flags(*groups):
    """Apply groups of click options in the order given, so --help lists them in that order."""

    def decorate(command):
        for decorator in reversed([d for group in groups for d in group]):
            command = decorator(command)
        return command

    return decorate
