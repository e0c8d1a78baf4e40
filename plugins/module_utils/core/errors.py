# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type module_utils raise; modules turn it into fail_json."""

from __future__ import annotations


class PgdrError(Exception):
    """A failure with a one-line message that says what failed and what to do.

    ``details`` go into the module result next to ``msg`` (stderr of a tool,
    the statement that failed, a list of findings); never put secrets there.
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details

    def fail_json_kwargs(self):
        return dict(msg=self.msg, **self.details)


def first_line(exc):
    """The first line of an exception's text (a driver's or a library's), for a one-line ``msg``."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
