"""The help formatter of the ``oxfcgi`` CLI: argparse's, with the terminal width found
without :mod:`shutil`.

``argparse.HelpFormatter`` imports :mod:`shutil` for ``get_terminal_size`` whenever it is
built without a width, which ``add_argument`` does for every option; :mod:`shutil` imports
``zlib``, ``bz2`` and ``lzma``: about 0.6 MB resident in every ``oxfcgi serve`` process that
never prints a help text (issue 11).
"""

from __future__ import annotations

import argparse
import os
import sys


def terminal_columns() -> int:
    """The terminal's width in columns, as ``shutil.get_terminal_size()`` gives it: ``COLUMNS``
    when it is a positive integer, else the size of the terminal on ``sys.__stdout__``, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``argparse.RawDescriptionHelpFormatter`` (descriptions and epilogs printed as written),
    ``width`` defaulting to :func:`terminal_columns` minus 2, as argparse's own default is."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)
