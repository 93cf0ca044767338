"""Command line: ``imagerec --config FILE COMMAND [options]``. Parses, calls the library, prints.

Library errors become one-line messages and exit codes here (``app.handle_errors``), and only here.
"""

from imagerec.cli import collection_commands, dedup_command, search_commands, serve_command  # noqa: F401 - registers the commands
from imagerec.cli.app import cli
from imagerec.procs import exit_status_kept


def main() -> None:
    try:
        cli(obj={}, prog_name="imagerec")
    finally:  # a Ctrl-C handled on the way must end as exit status 130, not as a kill by SIGINT
        exit_status_kept()


__all__ = ["cli", "main"]
