"""The one YAML reader: every YAML file the project reads is bounded in size, depth and aliases.

``yaml.safe_load`` builds what a file describes, and a few lines can describe a great deal: an
alias bomb ("billion laughs", nine anchors each repeating the one before nine times) in a corpus
spec's ``citation`` ended in a MemoryError after 19 s and 2.9 GB, and a deeply nested list in a
RecursionError. No file the project reads needs aliases (corpus specs, ``--config`` files, the
``config.yaml`` of a run directory or an export are written by people or by :func:`dump_yaml`,
which writes a value seen twice out twice, never as an alias), so :func:`read_yaml` refuses
them outright, together with files over :data:`MAX_YAML_BYTES` and nesting deeper than
:data:`MAX_YAML_DEPTH`. Every refusal, and a syntax error, is a :class:`YamlFileError`: one
sentence naming the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from yaml.events import AliasEvent

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "YamlFileError", "dump_yaml", "read_yaml"]

MAX_YAML_BYTES = 2**20  # 1 MiB: a corpus spec or a training config is a few KB
MAX_YAML_DEPTH = 32


class YamlFileError(ValueError):
    """A YAML file that cannot be read safely, or at all: one sentence naming it and the fix."""


class _Refused(yaml.YAMLError):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases and nesting deeper than MAX_YAML_DEPTH while
    composing, before any node is built."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            raise _Refused("it uses a YAML alias (*name)")
        if getattr(self.peek_event(), "anchor", None) is not None:
            raise _Refused("it uses a YAML anchor (&name)")
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise _Refused(f"it nests deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def read_yaml(path, what: str = "YAML file"):
    """The plain data in YAML file ``path`` (None for an empty file).

    YamlFileError (naming ``what`` and the path) if it is missing, over MAX_YAML_BYTES, uses
    anchors or aliases, nests deeper than MAX_YAML_DEPTH, or is not valid YAML.
    """
    path = Path(path)
    name = f"The {what} {os.fspath(path)}"
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise YamlFileError(f"{name} is {size} bytes, over the {MAX_YAML_BYTES}-byte limit for "
                                "a YAML file; pass the right file, or make it smaller.")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise YamlFileError(f"{name} cannot be read ({type(err).__name__}); pass the path of a "
                            "readable UTF-8 YAML file.") from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as err:
        raise YamlFileError(f"{name} was refused because {err}; write the values out in full "
                            f"(no anchors or aliases, at most {MAX_YAML_DEPTH} levels deep).") from None
    except yaml.YAMLError as err:
        raise YamlFileError(f"{name} is not valid YAML ({str(err).splitlines()[0]}); fix the "
                            "syntax.") from None


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper that writes a list or mapping met twice out twice (no &id001 / *id001)."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_yaml(data) -> str:
    """``yaml.safe_dump(data, sort_keys=False)`` without anchors, so :func:`read_yaml` reads it."""
    return yaml.dump(data, Dumper=_PlainDumper, sort_keys=False)
