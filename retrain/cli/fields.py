"""The one table between the library's names and the command line's flags.

Below the CLI, a message names what is wrong by the Python name a library user wrote:
a config field as `TrainingConfig.steps`, an API call's parameter as `classify.image`.
The CLI prints every error and log line through `in_flags`, which puts the flag in its
place (`--how_many_training_steps`), so printed lines read as they always have.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Field:
    """One flag and the config field (or API parameter) it sets."""

    flag: str  # without the dashes, as tensorflow-for-poets spells it
    owner: type | str  # the config class, or the name of the API call whose parameter it is
    name: str  # the field or parameter

    @property
    def token(self) -> str:
        owner = self.owner if isinstance(self.owner, str) else self.owner.__name__
        return f"{owner}.{self.name}"

    @property
    def has_default(self) -> bool:
        """Whether the field is a config field with a default (an API parameter's is the CLI's own)."""
        if isinstance(self.owner, str):
            return False
        field = _dataclass_field(self.owner, self.name)
        return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING

    @property
    def default(self):
        """The config's default: the one place defaults are written."""
        if isinstance(self.owner, str):
            raise TypeError(f"{self.token} is an API parameter, not a config field: it has no config default")
        field = _dataclass_field(self.owner, self.name)
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        raise TypeError(f"{self.token} has no default")


def _dataclass_field(owner: type, name: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if name not in fields:
        raise TypeError(f"{owner.__name__} has no field {name!r}")
    return fields[name]


FIELDS: list[Field] = []


def register(*fields: Field) -> dict[str, Field]:
    """Add a command's fields to the table (each command module registers its own), and return
    them by flag: the first field given for a flag is the one its option takes its default from;
    a later one for the same flag is another name of the library for what the flag sets."""
    known = {f.token: f.flag for f in FIELDS}
    for field in fields:
        if known.get(field.token, field.flag) != field.flag:
            raise ValueError(f"{field.token} is both --{known[field.token]} and --{field.flag}")
        if not isinstance(field.owner, str):
            _dataclass_field(field.owner, field.name)
        if field.token not in known:
            FIELDS.append(field)
        known[field.token] = field.flag
    by_flag: dict[str, Field] = {}
    for field in fields:
        by_flag.setdefault(field.flag, field)
    return by_flag


def field(flag: str) -> Field:
    """The table's entry for a flag."""
    for entry in FIELDS:
        if entry.flag == flag:
            return entry
    raise KeyError(flag)


def in_flags(message: str) -> str:
    """`message` with every library name of the table replaced by its flag."""
    flags = {f.token: f.flag for f in FIELDS}
    if not flags:
        return message
    tokens = "|".join(re.escape(token) for token in sorted(flags, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./\\-])(?:{tokens})(?!\w)")  # not inside a module path or a file's
    return pattern.sub(lambda match: f"--{flags[match.group(0)]}", message)
