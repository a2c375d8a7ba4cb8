"""The project's errors: every failure the suite expects (bad input, a model or
file it cannot take, a missing tool) is an :class:`LsnnError` whose message
names what is wrong and where. The command line prints these as one line;
anything else is a bug and keeps its traceback.

This module imports nothing heavy: every package of the suite, the torch-free
runtime path included, raises these."""
from __future__ import annotations


class LsnnError(Exception):
    """Base class of the suite's own errors."""


class MissingFileError(LsnnError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class ConfigError(LsnnError):
    """A configuration file, option or argument the suite cannot take."""


class OutputError(LsnnError):
    """An output path the suite will not or cannot write (not its own folder, unwritable, full)."""
