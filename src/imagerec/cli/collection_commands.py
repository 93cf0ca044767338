"""Commands that build the collection: index, status, train-embeddings, build-ann."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from imagerec.cli.app import acknowledge_interrupt, cli, command_config, handle_errors
from imagerec.cli.progress import bar_safe_echo, progress_bar
from imagerec.embed.choice import ModelChoice


@cli.command()
@click.option("--image-root", type=click.Path(file_okay=False, path_type=Path), help="Folder to scan (overrides data.image_root).")
@click.option("--workers", type=click.IntRange(min=1), help="Decode processes (overrides index.workers; default CPU count).")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Images per model batch and per transaction (index.batch_size).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where the model runs (runtime.device).")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (runtime.threads).")
@click.option("--prune", is_flag=True, help="Remove the rows of missing files even when that is most of the collection "
                                          "(index.max_removal_fraction would otherwise keep them).")
@click.option("--retry-skipped", is_flag=True, help="Try every file recorded as skipped again (they are retried on their "
                                                  "own when index.formats or index.max_image_pixels change).")
@click.option("--executor", type=click.Choice(["local", "ray"]), help="Where decoding and embedding run (index.executor): "
                                                                      "worker processes here, or a Ray cluster (imagerec[ray]).")
@click.option("--ray-address", metavar="ADDRESS", help="Ray cluster for --executor ray (index.ray.address): auto, "
                                                       "ray://host:10001; default: start a local Ray instance.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
@acknowledge_interrupt("stopping: finishing the current batch… (finished work is kept)")
def index(ctx, image_root, workers, batch_size, device, threads, prune, retry_skipped, executor, ray_address, quiet) -> None:
    """Scan data.image_root and store histograms, hashes and embeddings in images.db.

    Re-running only does what changed: new and modified files are (re)computed, deleted files are
    removed, a new model recomputes only embeddings. Broken files are skipped and recorded with a reason.
    One index runs at a time per output.dir: a second one exits at once naming the first one's pid.
    With --executor ray, a re-run after a failed or killed job computes only the files that have no shard yet.
    """
    from imagerec.indexing.run import index_collection
    from imagerec.indexing.summary import format_summary

    config = command_config(ctx).with_overrides({
        "data.image_root": image_root.resolve() if image_root else None,
        "index.workers": workers, "index.batch_size": batch_size,
        "runtime.device": device, "runtime.threads": threads,
        "index.executor": executor, "index.ray.address": ray_address,
    })
    choice = ModelChoice.from_config(config)
    if choice.pretrained and not quiet:
        click.echo(f"embedding with {choice.describe()}; 'train-embeddings' can adapt it to these photos")
    with progress_bar("img", enabled=not quiet) as bar:
        summary = index_collection(config, progress=bar, prune=prune, retry_skipped=retry_skipped)
    click.echo(format_summary(summary))
    if summary.model_missing:
        click.echo(f"note: no embedding model at {config.output.layout.model} (model.init: random); histograms and "
                   "hashes are stored. Run 'train-embeddings', then 'index' again to add embeddings (nothing else is recomputed).")
    if summary.interrupted:
        click.secho("interrupted: finished work is committed; run 'index' again to continue.", err=True, fg="yellow")
        sys.exit(130)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--skipped", "list_skipped", is_flag=True, help="Also list every skipped file with its reason and detail.")
@click.pass_context
@handle_errors
def status(ctx, as_json: bool, list_skipped: bool) -> None:
    """What the collection holds: images, skipped files by reason, embeddings, model, ANN index."""
    from imagerec.store.records import display_path, printable
    from imagerec.tools.status import collection_status, skipped_files

    config = command_config(ctx)
    report = collection_status(config)
    files = skipped_files(config) if list_skipped else None
    if as_json:
        out = report.to_dict()
        if files is not None:
            out["skipped_files"] = [{"path": display_path(p), "reason": r, "detail": d} for p, r, d in files]
        click.echo(json.dumps(out, indent=2))
        return
    reasons = ", ".join(f"{n} {r}" for r, n in report.skipped_by_reason.items()) or "none"
    ann = "absent" if report.ann is None else f"{report.ann.get('state')}, {report.ann.get('count')} images"
    if report.ann and report.ann.get("whitening_dims"):
        ann += f", whitened re-ranking ({report.ann['whitening_dims']} dims)"
    click.echo(f"database      {report.db_path} ({report.db_size_bytes / 1e6:.1f} MB, schema v{report.schema_version})")
    click.echo(f"images        {report.images}")
    click.echo(f"skipped       {report.skipped} ({reasons})")
    started = {"imagenet": " (pretrained)", "random": " (trained from scratch)"}.get(report.model_init or "", "")
    click.echo(f"embeddings    {report.with_embedding} with model {report.model_id or '(none yet)'}{started}")
    click.echo(f"ANN index     {ann}")
    for path, reason, detail in files or ():
        click.echo(f"  {reason:<20} {printable(display_path(path))}  ({printable(detail)})")


@cli.command()
@click.option("--repair", is_flag=True, help="Delete rows whose stored features are damaged; the next 'index' recomputes them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
@handle_errors
def doctor(ctx, repair: bool, as_json: bool) -> None:
    """Check images.db: SQLite's integrity check and the size of every stored histogram and embedding.

    Exits 1 when something is wrong (after --repair: when the file itself is damaged).
    """
    from imagerec.store.guard import damaged_hint
    from imagerec.tools.status import check_collection

    report = check_collection(command_config(ctx), repair=repair)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"database      {report.db_path}")
        click.echo(f"integrity     {report.integrity}")
        click.echo(f"damaged rows  {len(report.bad_histograms)} histograms, {len(report.bad_embeddings)} embeddings"
                   + (" (deleted; run 'index' to recompute them)" if report.repaired else ""))
        if report.integrity != "ok":
            click.echo(f"the file is damaged: {damaged_hint(Path(report.db_path))}")
        elif not report.healthy and not report.repaired:
            click.echo("run 'imagerec doctor --repair' to delete the damaged rows, then 'index' to recompute them")
    if report.integrity != "ok" or not (report.healthy or report.repaired):
        sys.exit(1)


@cli.command("train-embeddings")
@click.option("--epochs", type=click.IntRange(min=1), help="Total epochs (train.epochs); with --resume, training runs up to this many.")
@click.option("--batch-size", type=click.IntRange(min=2), help="Images per step (train.batch_size).")
@click.option("--image-size", type=click.IntRange(16, 512), help="Input size in pixels (train.image_size).")
@click.option("--max-images", type=click.IntRange(min=2), help="Train on at most this many images (train.max_images).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Where to train (runtime.device).")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads on CPU (runtime.threads).")
@click.option("--resume", is_flag=True, help="Continue from output.dir/checkpoints/checkpoint.pt.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
@handle_errors
@acknowledge_interrupt("stopping… (nothing is lost; the last checkpoint is kept)")
def train_embeddings_command(ctx, epochs, batch_size, image_size, max_images, device, threads, resume, quiet) -> None:
    """Train the embedding model with SimCLR on images under data.image_root.

    Fine-tunes the pretrained model.arch (model.init: imagenet) or trains it from scratch (random).
    Writes the best backbone to output.dir/embedding_model.pt (when fine-tuning, only one that beats
    the pretrained start on validation), a checkpoint every epoch to
    output.dir/checkpoints/, and one line per epoch to output.dir/train_log.jsonl. Ctrl-C saves a
    checkpoint and stops; run again with --resume to continue. Run 'index' afterwards to embed.
    """
    from imagerec.train.run import train_embeddings

    config = command_config(ctx).with_overrides({
        "train.epochs": epochs, "train.batch_size": batch_size, "train.image_size": image_size,
        "train.max_images": max_images, "runtime.device": device, "runtime.threads": threads,
    })
    with progress_bar("img", enabled=not quiet) as bars:
        log = bar_safe_echo if bars is not None else click.echo  # log lines go above a bar, not through it
        summary = train_embeddings(config, resume=resume, progress=bars, log=log)
    best = "n/a" if summary.best_value is None else f"{summary.best_value:.4f}"
    click.echo(f"trained {summary.epochs_done}/{summary.epochs} epochs on {summary.train_images} images "
               f"({summary.val_images} for validation) in {summary.wall_s:.1f} s; "
               f"best {summary.best_metric} {best} at epoch {summary.best_epoch}")
    if summary.model_id:
        click.echo(f"model {summary.model_id} written to {summary.model_path}; run 'index' to embed with it")
    elif summary.best_epoch == 0:
        click.echo(f"no epoch beat the pretrained start on validation ({summary.best_metric} {best}); no model file "
                   f"written, so 'index' keeps using {ModelChoice.from_config(config).describe()}")
    if summary.interrupted:
        click.secho("interrupted: checkpoint saved; run 'train-embeddings --resume' to continue.", err=True, fg="yellow")
        sys.exit(130)


@cli.command("build-ann")
@click.option("--threads", type=click.IntRange(min=1), help="Build threads (ann.threads; default CPU count).")
@click.pass_context
@handle_errors
def build_ann_command(ctx, threads) -> None:
    """Build the ANN index (ann.kind, default HNSW) over all stored embeddings (output.dir/ann.json + its files).

    The previous index stays usable until the new one is completely written.
    """
    from imagerec.ann import build_ann
    from imagerec.ann.whitening import unfit_reason

    config = command_config(ctx).with_overrides({"ann.threads": threads})
    with progress_bar("vec") as bar:
        summary = build_ann(config, progress=bar)
    m = summary.metadata
    params = " ".join(f"{k}={'auto' if v is None else v}" for k, v in m.params.items() if k != "threads")
    w, why = m.whitening, unfit_reason(config.ann.whitening.dims, m.count, m.dim)
    whitening = (f"re-ranking whitened to {w['dims']} dims (power {w['power']:g})" if w else
                 "re-ranking on plain cosine" + ("" if why in (None, "off") else f" (whitening {why})"))
    click.echo(f"built {summary.path}: {m.count} images, dim {m.dim}, model {m.model_id}, {m.kind} {params}, "
               f"{whitening}, {m.size_bytes / 1e6:.1f} MB in {summary.elapsed_s:.1f} s")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
@acknowledge_interrupt("stopping: finishing the current batch… (finished work is kept)")
def ingest(ctx, paths, quiet) -> None:
    """Upsert Parquet shards (files, or folders of .parquet files) made by 'index --executor ray' into images.db.

    Every shard is checked before the first row is written; rows are written one transaction per
    batch, so ingesting again after an interruption (or twice) is harmless.
    """
    from imagerec.collection import Collection
    from imagerec.indexing.summary import format_summary

    with progress_bar("img", enabled=not quiet) as bar, Collection(command_config(ctx)) as collection:
        summary = collection.ingest(paths, progress=bar)
    click.echo(format_summary(summary))
    if summary.interrupted:
        click.secho("interrupted: finished batches are committed; run 'ingest' again to finish.", err=True, fg="yellow")
        sys.exit(130)
