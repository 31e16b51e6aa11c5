"""The one base class of errors the user fixes (a config value, a fact record, a model name, a busy run folder).

The CLI prints such an error as one line and exits 2; anything else is a bug and keeps its traceback. Each subclass
also derives from the built-in its callers already catch (ValueError, RuntimeError), so existing handlers still work.
"""

from __future__ import annotations


class UserError(Exception):
    """An error whose message names what is wrong and the fix; printed without a traceback by the CLI."""


class MissingInputError(UserError, FileNotFoundError):
    """A file a command needs is not there yet; the message names the command or install step that makes it."""
