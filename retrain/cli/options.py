"""Flag spellings shared by the commands: tensorflow-for-poets' underscores, dashes too."""

from __future__ import annotations

from pathlib import Path

import click


def option(name: str, *args, **kwargs):
    """An option spelled --name_with_underscores, also accepted as --name-with-dashes."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return click.option(*spellings, name, *args, **kwargs)



def switch(name: str, help: str):
    """An on/off flag, --name or --no_name (dashed spellings too), so a recipe's setting can be turned off."""
    dashed = name.replace("_", "-")
    spellings = [f"--{name}/--no_{name}"] + ([f"--{dashed}/--no-{dashed}"] if dashed != name else [])
    return click.option(*spellings, name, default=False, help=help)



PATH = click.Path(path_type=Path)


def with_flags(*groups):
    """Apply groups of click options in the order given, so --help lists them in that order."""

    def decorate(command):
        for decorator in reversed([d for group in groups for d in group]):
            command = decorator(command)
        return command

    return decorate
