"""The ``imagerec`` click group, the config option, and the one place library errors become exit codes."""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path

import click

from imagerec.config import Config, load_config
from imagerec.errors import ImagerecError


def handle_errors(func):
    """Library errors → ``error: <one line>`` on stderr and the error's exit code; Ctrl-C → 130."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ImagerecError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:  # before a command's own handling starts (imports, model loading)
            click.secho("interrupted before any work was done.", err=True, fg="yellow")
            sys.exit(130)

    return wrapper


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
