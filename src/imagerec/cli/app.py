"""The ``imagerec`` click group, the config option, and the one place library errors become exit codes."""

from __future__ import annotations

import signal
import sys
import threading
from functools import wraps
from pathlib import Path

import click

from imagerec.atomic import is_disk_full
from imagerec.config import Config, load_config
from imagerec.errors import DiskFullError, ImagerecError, Interrupted
from imagerec.procs import ack_sigint, forget_interrupt


def handle_errors(func):
    """Library errors → ``error: <one line>`` on stderr and the error's exit code; Ctrl-C → 130.

    A full disk that reaches here as a bare ``OSError`` (a writer without its own handling) is
    reported like ``DiskFullError``.
    """

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            try:
                return func(*args, **kwargs)
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                raise DiskFullError(exc.filename or "the output folder") from None
        except ImagerecError as exc:
            if isinstance(exc, Interrupted):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # outside a command's own handling (imports, model loading, set-up)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting anyway: a second Ctrl-C must not kill the exit
            click.secho("interrupted; nothing unfinished was kept.", err=True, fg="yellow")
            sys.exit(130)

    return wrapper


def acknowledge_interrupt(message: str):
    """Decorator: the first Ctrl-C prints ``message`` at once (then stops as a KeyboardInterrupt would)."""

    def decorate(func):
        @wraps(func)
        def wrapper(*args, **kwargs):
            ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # e.g. started in the background
            if ignored or threading.current_thread() is not threading.main_thread():
                return func(*args, **kwargs)
            previous = signal.signal(signal.SIGINT, ack_sigint(message))
            try:
                return func(*args, **kwargs)
            finally:
                signal.signal(signal.SIGINT, previous)
                forget_interrupt()

        return wrapper

    return decorate


def command_config(ctx: click.Context) -> Config:
    """The ``--config`` file given before the command, loaded and validated."""
    path = ctx.obj.get("config_path")
    if path is None:
        raise click.UsageError("no config given: pass --config FILE before the command (e.g. --config config_miniset.yaml)")
    return load_config(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Config profile (YAML), e.g. config_miniset.yaml. Relative paths in it resolve against its folder.")
@click.version_option(package_name="imagerec")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """imagerec: find similar images in a large local photo collection.

    Typical run: index a folder, train the embedding model, index again, build the ANN index, query.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
