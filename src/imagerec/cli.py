"""Command line: ``imagerec --config FILE COMMAND [options]``. Parses, calls the library, prints.

Library errors become one-line messages and exit codes here, and only here.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from .config import Config, load_config
from .errors import ImagerecError


def _handle_errors(func):
    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ImagerecError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(exc.exit_code)

    return wrapper


def _config(ctx: click.Context) -> Config:
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


@cli.command()
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path), help="Folder to scan (overrides data.image_root).")
@click.option("--workers", type=click.IntRange(min=1), help="Decode processes (overrides index.workers; default CPU count).")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Images per model batch and per transaction (index.batch_size).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where the model runs (runtime.device).")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (runtime.threads).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@_handle_errors
def index(ctx, image_root, workers, batch_size, device, threads, quiet) -> None:
    """Scan data.image_root and store histograms, hashes and embeddings in images.db.

    Re-running only does what changed: new and modified files are (re)computed, deleted files are
    removed, a new model recomputes only embeddings. Broken files are skipped and recorded with a reason.
    """
    from .indexer import index_collection

    config = _config(ctx).with_overrides({
        "data.image_root": image_root.resolve() if image_root else None,
        "index.workers": workers, "index.batch_size": batch_size,
        "runtime.device": device, "runtime.threads": threads,
    })
    show_progress = not quiet and sys.stderr.isatty()
    summary = index_collection(config, progress=_tqdm_progress if show_progress else None)
    click.echo(_format_summary(summary))
    if summary.model_missing:
        click.echo(f"note: no embedding model at {config.output.model_path}; histograms and hashes are stored. "
                   "Run 'train-embeddings', then 'index' again to add embeddings (nothing else is recomputed).")
    if summary.interrupted:
        click.secho("interrupted: finished work is committed; run 'index' again to continue.", err=True, fg="yellow")
        sys.exit(130)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@_handle_errors
def status(ctx, as_json: bool) -> None:
    """What the collection holds: images, skipped files by reason, embeddings, model, ANN index."""
    from .status import collection_status

    report = collection_status(_config(ctx))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    reasons = ", ".join(f"{n} {r}" for r, n in report.skipped_by_reason.items()) or "none"
    ann = "absent" if report.ann is None else f"{report.ann.get('state')}, {report.ann.get('count')} images"
    click.echo(f"database      {report.db_path} ({report.db_size_bytes / 1e6:.1f} MB, schema v{report.schema_version})")
    click.echo(f"images        {report.images}")
    click.echo(f"skipped       {report.skipped} ({reasons})")
    click.echo(f"embeddings    {report.with_embedding} with model {report.model_id or '(none yet)'}")
    click.echo(f"ANN index     {ann}")


def _format_summary(s) -> str:
    skipped = sum(s.skipped.values())
    reasons = ", ".join(f"{n} {r}" for r, n in s.skipped.most_common())
    lines = [
        f"indexed {s.indexed} new, {s.updated} updated, {s.embedded} embeddings added, "
        f"{s.unchanged} unchanged, {s.removed} removed",
        f"skipped {skipped} this run" + (f" ({reasons})" if reasons else "")
        + (f"; {s.skipped_known} skipped before and unchanged" if s.skipped_known else ""),
        f"{s.processed} images in {s.elapsed_s:.1f} s ({s.images_per_second:.1f} images/s)",
    ]
    passed = {"non-image files": s.scan.non_image_files, "hidden entries": s.scan.hidden,
              "symlinks": s.scan.symlinks, "special files": s.scan.special_files}
    passed_text = ", ".join(f"{n} {what}" for what, n in passed.items() if n)
    if passed_text:
        lines.append(f"passed over: {passed_text}")
    for folder in s.scan.unreadable_dirs:
        lines.append(f"warning: cannot read folder {folder}")
    return "\n".join(lines)


def _tqdm_progress(total: int):
    from tqdm import tqdm

    class _Bar:
        def __init__(self) -> None:
            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1)

        def update(self, n: int, summary) -> None:
            self.bar.update(n)
            skipped = sum(summary.skipped.values())
            if skipped:
                self.bar.set_postfix(skipped=skipped, refresh=False)

        def close(self) -> None:
            self.bar.close()

    return _Bar()


def main() -> None:
    cli(obj={}, prog_name="imagerec")
