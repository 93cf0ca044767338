"""Command line: ``imagerec --config FILE COMMAND [options]``. Parses, calls the library, prints.

Library errors become one-line messages and exit codes here, and only here.
"""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path

import click

from imagerec.config import Config, load_config
from imagerec.errors import ImagerecError


def _handle_errors(func):
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
    from imagerec.indexing.run import index_collection

    config = _config(ctx).with_overrides({
        "data.image_root": image_root.resolve() if image_root else None,
        "index.workers": workers, "index.batch_size": batch_size,
        "runtime.device": device, "runtime.threads": threads,
    })
    bar = _tqdm_progress() if not quiet and sys.stderr.isatty() else None
    try:
        summary = index_collection(config, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    click.echo(_format_summary(summary))
    if summary.model_missing:
        click.echo(f"note: no embedding model at {config.output.layout.model}; histograms and hashes are stored. "
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
    from imagerec.tools.status import collection_status

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
@_handle_errors
def train_embeddings_command(ctx, epochs, batch_size, image_size, max_images, device, threads, resume, quiet) -> None:
    """Train the embedding model (SimCLR, ResNet-18) on images under data.image_root.

    Writes the best backbone to output.dir/embedding_model.pt, a checkpoint every epoch to
    output.dir/checkpoints/, and one line per epoch to output.dir/train_log.jsonl. Ctrl-C saves a
    checkpoint and stops; run again with --resume to continue. Run 'index' afterwards to embed.
    """
    from imagerec.train.run import train_embeddings

    config = _config(ctx).with_overrides({
        "train.epochs": epochs, "train.batch_size": batch_size, "train.image_size": image_size,
        "train.max_images": max_images, "runtime.device": device, "runtime.threads": threads,
    })
    bars = _stage_bars("img") if not quiet and sys.stderr.isatty() else None
    try:
        summary = train_embeddings(config, resume=resume, progress=bars, log=bars.write if bars else click.echo)
    finally:
        if bars is not None:
            bars.close()
    best = "n/a" if summary.best_value is None else f"{summary.best_value:.4f}"
    click.echo(f"trained {summary.epochs_done}/{summary.epochs} epochs on {summary.train_images} images "
               f"({summary.val_images} for validation) in {summary.wall_s:.1f} s; "
               f"best {summary.best_metric} {best} at epoch {summary.best_epoch}")
    if summary.model_id:
        click.echo(f"model {summary.model_id} written to {summary.model_path}; run 'index' to embed with it")
    if summary.interrupted:
        click.secho("interrupted: checkpoint saved; run 'train-embeddings --resume' to continue.", err=True, fg="yellow")
        sys.exit(130)


def _stage_bars(unit: str):
    """A ``ProgressCallback`` drawing one tqdm bar per stage: a new ``event.stage`` closes the old bar."""
    from tqdm import tqdm

    class _Bars:
        def __init__(self) -> None:
            self.stage: str | None = None
            self.bar = None

        def __call__(self, event) -> None:
            if event.stage != self.stage:
                self.close()
                self.stage = event.stage
                self.bar = tqdm(total=event.total, initial=event.done, desc=event.stage, unit=unit,
                                dynamic_ncols=True, leave=False, smoothing=0.1)
            self.bar.total = event.total
            if event.counters:
                self.bar.set_postfix(event.counters, refresh=False)
            self.bar.update(event.done - self.bar.n)

        def write(self, line: str) -> None:  # a log line printed above the bar
            tqdm.write(line)

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
            self.bar, self.stage = None, None

    return _Bars()


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


def _tqdm_progress(unit: str = "img"):
    """A tqdm bar as a ``ProgressCallback``: opened at the first event, moved to each event's ``done``."""
    from tqdm import tqdm

    class _Bar:
        def __init__(self) -> None:
            self.bar = None

        def __call__(self, event) -> None:
            if self.bar is None:
                self.bar = tqdm(total=event.total, unit=unit, dynamic_ncols=True, smoothing=0.1)
            self.bar.update(event.done - self.bar.n)
            skipped = event.counters.get("skipped")
            if skipped:
                self.bar.set_postfix(skipped=skipped, refresh=False)

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()

    return _Bar()


@cli.command("build-ann")
@click.option("--threads", type=click.IntRange(min=1), help="Build threads (ann.threads; default CPU count).")
@click.pass_context
@_handle_errors
def build_ann_command(ctx, threads) -> None:
    """Build the ANN index (ann.kind, default HNSW) over all stored embeddings (output.dir/ann.json + its files).

    The previous index stays usable until the new one is completely written.
    """
    from imagerec.ann import build_ann

    config = _config(ctx).with_overrides({"ann.threads": threads})
    bar = _done_of_total_bar("vec", "build-ann") if sys.stderr.isatty() else None
    try:
        summary = build_ann(config, progress=(lambda e: bar(e.done, e.total)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    m = summary.metadata
    params = " ".join(f"{k}={v}" for k, v in m.params.items() if k != "threads")
    click.echo(f"built {summary.path}: {m.count} images, dim {m.dim}, model {m.model_id}, {m.kind} {params}, "
               f"{m.size_bytes / 1e6:.1f} MB in {summary.elapsed_s:.1f} s")


@cli.command()
@click.option("--image", "images", multiple=True, metavar="PATH", help="Query image file (repeat, or list several paths).")
@click.option("--id", "ids", multiple=True, type=int, metavar="N", help="Query by image id (repeatable).")
@click.argument("more_images", nargs=-1, metavar="[PATH]...")
@click.option("--top-k", type=int, help="Number of results (query.top_k).")
@click.option("--w-embedding", type=float, help="Weight of embedding cosine (query.w_embedding).")
@click.option("--w-color", type=float, help="Weight of colour-histogram similarity (query.w_color).")
@click.option("--w-dhash", type=float, help="Weight of dHash similarity (query.w_dhash).")
@click.option("--w-phash", "w_phash", type=float, hidden=True, expose_value=True)
@click.option("--include-query", is_flag=True, help="Keep the query images themselves in the results.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact sheet PNG here.")
@click.pass_context
@_handle_errors
def query(ctx, images, ids, more_images, top_k, w_embedding, w_color, w_dhash, w_phash, include_query, as_json, output) -> None:
    """Find images similar to --image PATH [PATH ...] and/or --id N.

    Candidates come from the ANN index and are re-scored with embedding cosine, colour-histogram
    (Bhattacharyya) and dHash similarity; the fused score is their weighted sum (weights normalised to
    sum 1), averaged over several query images.
    """
    from imagerec.search.fusion import Weights
    from imagerec.search.recommender import SearchSettings, run_query

    if w_phash is not None:
        raise click.UsageError("--w-phash was renamed to --w-dhash (the hash is a difference hash, dHash)")
    config = _config(ctx)
    weights = Weights.merged(SearchSettings.from_config(config).weights,
                             {"embedding": w_embedding, "color": w_color, "dhash": w_dhash})
    response = run_query(config, images=[*images, *more_images], ids=ids, top_k=top_k, weights=weights,
                         include_query=include_query)
    for notice in response.notices:
        click.secho(f"note: {notice}", err=True, fg="yellow")
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in response.results], indent=2))
    else:
        click.echo(_format_results(response))
    if output is not None:
        from imagerec.tools.render import render_contact_sheet

        path = render_contact_sheet(response, config, output)
        click.echo(f"contact sheet written to {path}", err=as_json)


def _printable(text: str) -> str:
    """A file name on one table row: control characters (newlines, carriage returns...) escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _format_results(response) -> str:
    w = response.weights
    lines = [f"query: {', '.join(_printable(q.label) for q in response.queries)}  (weights embedding {w.embedding:.2f}, "
             f"color {w.color:.2f}, dhash {w.dhash:.2f}; {response.candidates} candidates re-ranked)",
             f"{'rank':>4} {'id':>8} {'score':>7} {'embed':>7} {'color':>7} {'dhash':>7}  path"]
    for r in response.results:
        s = r.scores
        mark = "  [near-duplicate]" if r.near_duplicate else ""
        lines.append(f"{r.rank:>4} {r.id:>8} {r.score:>7.4f} {s['embedding']:>7.4f} {s['color']:>7.4f} {s['dhash']:>7.4f}  "
                     f"{_printable(r.relpath)}{mark}")
    if not response.results:
        lines.append("(no results)")
    return "\n".join(lines)


@cli.command()
@click.option("--mode", type=click.Choice(["query", "index"]), required=True, help="What to profile.")
@click.option("--image", "images", multiple=True, metavar="PATH", help="Query image(s) for --mode query (default: a stored image).")
@click.option("--id", "ids", multiple=True, type=int, metavar="N", help="Query by id for --mode query.")
@click.option("--repeat", type=click.IntRange(1, 10_000), default=20, show_default=True, help="Queries to run (--mode query).")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=200, show_default=True, help="Images to process (--mode index).")
@click.option("--top", type=click.IntRange(1, 200), default=25, show_default=True, help="Functions to list.")
@click.pass_context
@_handle_errors
def profile(ctx, mode, images, ids, repeat, limit, top) -> None:
    """Run the real query or index code under cProfile; writes output.dir/cache/profile_<mode>.prof.

    Prints the top functions by cumulative time and the wall time per stage. Open the file later
    with 'python -m pstats FILE'.
    """
    from imagerec.tools.profiling import profile_index, profile_query

    config = _config(ctx)
    if mode == "query":
        report = profile_query(config, images=images, ids=ids, repeat=repeat, top=top)
    else:
        report = profile_index(config, limit=limit, top=top)
    click.echo(report.text)


@cli.command("viz-2d")
@click.option("--sample-size", type=click.IntRange(min=2), default=2000, show_default=True, help="Embeddings to plot.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG to write.")
@click.option("--thumbnails", is_flag=True, help="Draw small thumbnails instead of dots.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and t-SNE seed.")
@click.option("--perplexity", type=float, default=30.0, show_default=True, help="t-SNE perplexity (capped for tiny samples).")
@click.pass_context
@_handle_errors
def viz_2d(ctx, sample_size, output, thumbnails, seed, perplexity) -> None:
    """Plot a seeded uniform sample of embeddings in 2-D (t-SNE), coloured by top-level folder."""
    from imagerec.tools.viz import plot_embeddings_2d

    summary = plot_embeddings_2d(_config(ctx), sample_size=sample_size, output=output, thumbnails=thumbnails,
                                 seed=seed, perplexity=perplexity)
    click.echo(f"wrote {summary.output}: {summary.points} points, {summary.groups} folders, "
               f"t-SNE {summary.tsne_s:.1f} s, total {summary.elapsed_s:.1f} s")


@cli.command()
@click.option("--sample", type=click.IntRange(min=1), metavar="N", help="Evaluate a seeded sample of N query images (default: all).")
@click.option("--labels", "labels_file", type=click.Path(dir_okay=False, path_type=Path), metavar="CSV",
              help="path,group rows (paths relative to data.image_root; a row with only a path takes its top-level "
                   "folder, so a split list such as test.txt works). Default: top-level folder = group.")
@click.option("--k", "ks", type=click.IntRange(min=1), multiple=True, help="Cut-offs for P@k and R@k (repeatable; default 1, 5, 10).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as markdown here.")
@click.option("--tune-weights", is_flag=True, help="Grid-search the fusion weights on a validation part of the queries.")
@click.option("--grid-step", type=float, default=0.05, show_default=True, help="Weight grid step (must divide 1).")
@click.option("--metric", type=click.Choice(["map", "p@1", "p@5", "p@10"]), default="map", show_default=True,
              help="What --tune-weights maximises.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5, show_default=True,
              help="Share of the queries used for validation by --tune-weights (the rest is the test part).")
@click.option("--write-config", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="With --tune-weights: write the best weights as query.w_* into PATH (created from --config if "
                   "absent; other keys kept, YAML comments lost).")
@click.option("--near-duplicates", is_flag=True, help="Instead: edit sampled images (temporary copies) and report how "
                                                      "often each copy finds its original, per edit and signal.")
@click.option("--edits", type=click.IntRange(min=1), default=50, show_default=True, help="Images to edit for --near-duplicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling, the validation split and edits.")
@click.pass_context
@_handle_errors
def evaluate(ctx, sample, labels_file, ks, as_json, output, tune_weights, grid_step, metric, val_fraction,
             write_config, near_duplicates, edits, seed) -> None:
    """Measure retrieval quality: leave-one-out P@k, R@k and mAP per signal and fused, ANN recall@10.

    Each labelled image (class = top-level folder, or --labels) queries all the others, scored
    exactly and exhaustively with the measures and weights 'query' uses. Needs 'index' and 'build-ann'.
    """
    from imagerec.errors import EvaluationError
    from imagerec.eval.report import format_table
    from imagerec.eval.retrieval import evaluate as run_evaluation
    from imagerec.eval.tuning import TuneSettings, write_weights_config
    from imagerec.eval.near_duplicates import format_near_duplicates, near_duplicate_benchmark

    if write_config is not None and not tune_weights:
        raise EvaluationError("--write-config needs --tune-weights")
    config = _config(ctx)
    progress = _event_bar("query") if sys.stderr.isatty() and not as_json else None
    try:
        if near_duplicates:
            report = near_duplicate_benchmark(config, images=edits, seed=seed, progress=progress)
            text, markdown = format_near_duplicates(report), format_near_duplicates(report, markdown=True)
        else:
            tune = TuneSettings(grid_step, metric, val_fraction) if tune_weights else None
            report = run_evaluation(config, labels_file=labels_file, sample=sample, seed=seed, ks=ks or (1, 5, 10),
                                    tune=tune, progress=progress)
            text, markdown = format_table(report), format_table(report, markdown=True)
    finally:
        if progress is not None:
            progress.close()
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else text)
    if output is not None:
        output.write_text(markdown + "\n", encoding="utf-8")
        click.echo(f"report written to {output}", err=as_json)
    if write_config is not None:
        path = write_weights_config(config, report.tuning.best, write_config)
        click.echo(f"best weights written to {path} (query.w_*)", err=as_json)


def _done_of_total_bar(unit: str, desc: str):
    """A tqdm bar driven by ``progress(done, total)`` callbacks (the library's progress protocol)."""
    from tqdm import tqdm

    class _Bar:
        def __init__(self) -> None:
            self.bar = tqdm(unit=unit, dynamic_ncols=True, desc=desc)

        def __call__(self, done: int, total: int) -> None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

        def close(self) -> None:
            self.bar.close()

    return _Bar()


def _event_bar(unit: str):
    """A tqdm bar driven by the library's ``ProgressEvent`` callbacks: a new bar whenever the stage changes."""
    from tqdm import tqdm

    class _Bar:
        def __init__(self) -> None:
            self.bar = None
            self.stage = None

        def __call__(self, event) -> None:
            if event.stage != self.stage:
                self.close()
                self.stage = event.stage
                self.bar = tqdm(unit=unit, dynamic_ncols=True, desc=event.stage, total=event.total, smoothing=0.1)
            self.bar.total = event.total
            self.bar.update(event.done - self.bar.n)
            if event.counters:
                self.bar.set_postfix({k: v for k, v in event.counters.items() if v}, refresh=False)

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return _Bar()


def main() -> None:
    cli(obj={}, prog_name="imagerec")
