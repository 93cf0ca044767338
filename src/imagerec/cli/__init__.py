"""Command line: ``imagerec --config FILE COMMAND [options]``. Parses, calls the library, prints.

Library errors become one-line messages and exit codes here (``app.handle_errors``), and only here.
"""

from imagerec.cli import collection_commands, dedup_command, search_commands, serve_command  # noqa: F401 - registers the commands
from imagerec.cli.app import cli


def main() -> None:
    cli(obj={}, prog_name="imagerec")


__all__ = ["cli", "main"]
