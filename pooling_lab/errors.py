"""User-facing errors: printed as one line, exit code 2, no traceback (unless --debug)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a config value, a missing file, a data set that is not there.

    ``source`` is the file the problem is in, ``field`` the dotted config path; both are optional
    and, when given, lead the message so that the one printed line says where to look.
    """

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        text = f"{where}: {self.detail}" if where else self.detail
        return " ".join(text.split())


def file_system_fault(error: OSError) -> UserError:
    """A fault of the file system (a full disk, a read-only mount) as the one line naming the file
    it hit."""
    return UserError(error.strerror or str(error), source=error.filename and str(error.filename))


class DataNotFoundError(UserError):
    """A data set is not on disk and may not (or could not) be downloaded."""
