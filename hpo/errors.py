"""One exception root. The CLI turns any HpoError into one line and exit status 2.

Anything else that escapes is a bug of ours and keeps its traceback. The checks at the end raise ConfigError in
the shapes every file reader shares (study, space, paper and exported files, `dataset:` values), so that a wrong
type, an unknown key or a missing one reads the same in each.
"""

from __future__ import annotations

from collections.abc import Collection


class HpoError(Exception):
    """Root of every error that is the user's input or environment, not a bug."""


class ConfigError(HpoError):
    """A study or search-space file is malformed; the message names the file and the key."""

    def __init__(self, source: str, key: str, message: str):
        self.source, self.key = str(source), key
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        super().__init__(where + message)


class DataError(HpoError):
    """A data set is missing, malformed, or not the data set its name says."""


class StudyError(HpoError):
    """A study cannot be found, resumed or summarised as asked."""


def check_type(value, types: type | tuple[type, ...], source, key: str, *, positive: bool = False,
               allow_none: bool = False):
    """`value` if it is one of `types` (a bool is not a number here), and > 0 when `positive`; else ConfigError."""
    if value is None and allow_none:
        return None
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) or not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types)
        raise ConfigError(source, key, f"expected {want}, but got {value!r}")
    if positive and value <= 0:
        raise ConfigError(source, key, f"`{key.rsplit('.', 1)[-1]} > 0` must hold, but got {value!r}")
    return value


def check_keys(doc: dict, allowed: Collection | None, source, key: str = "", *, required: Collection = ()) -> None:
    """Unknown keys are errors (the first one written is named), and each of `required` must be there.
    `allowed`: None takes any key; a set is listed sorted, a sequence in its own order; `key` "" is the top."""
    dot = f"{key}." if key else ""
    if allowed is not None:
        for k in doc:
            if k not in allowed:
                names = sorted(allowed) if isinstance(allowed, (set, frozenset)) else allowed
                raise ConfigError(source, f"{dot}{k}", f"unknown key; allowed: {', '.join(names)}")
    for k in required:
        if k not in doc:
            raise ConfigError(source, f"{dot}{k}", "missing")


def check_mapping(value, allowed: Collection | None, source, key: str, *, required: Collection = (),
                  optional: bool = True) -> dict:
    """`value` as a mapping whose keys check_keys accepts; when `optional`, None (a section left empty) reads
    as {}."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"expected a mapping, but got {value!r}")
    check_keys(value, allowed, source, key, required=required)
    return value
