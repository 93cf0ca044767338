"""Commands that read the collection: query, profile, viz-2d, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import click

from imagerec.cli.app import cli, command_config, handle_errors
from imagerec.cli.progress import progress_bar
from imagerec.store.records import printable


@cli.command()
@click.option("--image", "images", multiple=True, metavar="PATH", help="Query image file (repeat, or list several paths).")
@click.option("--id", "ids", multiple=True, type=int, metavar="N", help="Query by image id (repeatable).")
@click.argument("more_images", nargs=-1, metavar="[PATH]...")
@click.option("--top-k", type=int, help="Number of results (query.top_k).")
@click.option("--w-embedding", type=float, help="Weight of embedding cosine (query.w_embedding).")
@click.option("--w-color", type=float, help="Weight of colour-histogram similarity (query.w_color).")
@click.option("--w-dhash", type=float, help="Weight of dHash similarity (query.w_dhash).")
@click.option("--w-phash", "w_phash", type=float, hidden=True, help="Renamed: use --w-dhash.")
@click.option("--include-query", is_flag=True, help="Keep the query images themselves in the results.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact sheet PNG here.")
@click.pass_context
@handle_errors
def query(ctx, images, ids, more_images, top_k, w_embedding, w_color, w_dhash, w_phash, include_query, as_json, output) -> None:
    """Find images similar to --image PATH [PATH ...] and/or --id N.

    Candidates come from the ANN index and are re-scored with embedding cosine, colour-histogram
    (Bhattacharyya) and dHash similarity; the fused score is their weighted sum (weights normalised to
    sum 1), averaged over several query images.
    """
    from imagerec.search.recommender import run_query

    if w_phash is not None:
        raise click.UsageError("--w-phash was renamed to --w-dhash (the hash is a difference hash, dHash)")
    config = command_config(ctx)
    weights = {"embedding": w_embedding, "color": w_color, "dhash": w_dhash}  # None: the collection's default
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


def _format_results(response) -> str:
    w = response.weights
    lines = [f"query: {', '.join(printable(q.label) for q in response.queries)}  (weights embedding {w.embedding:.2f}, "
             f"color {w.color:.2f}, dhash {w.dhash:.2f}; {response.candidates} candidates re-ranked)",
             f"{'rank':>4} {'id':>8} {'score':>7} {'embed':>7} {'color':>7} {'dhash':>7}  path"]
    for r in response.results:
        s = r.scores
        mark = "  [near-duplicate]" if r.near_duplicate else ""
        lines.append(f"{r.rank:>4} {r.id:>8} {r.score:>7.4f} {s['embedding']:>7.4f} {s['color']:>7.4f} {s['dhash']:>7.4f}  "
                     f"{printable(r.relpath)}{mark}")
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
@handle_errors
def profile(ctx, mode, images, ids, repeat, limit, top) -> None:
    """Run the real query or index code under cProfile; writes output.dir/cache/profile_<mode>.prof.

    Prints the top functions by cumulative time and the wall time per stage. Open the file later
    with 'python -m pstats FILE'.
    """
    from imagerec.tools.profiling import profile_index, profile_query

    config = command_config(ctx)
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
@handle_errors
def viz_2d(ctx, sample_size, output, thumbnails, seed, perplexity) -> None:
    """Plot a seeded uniform sample of embeddings in 2-D (t-SNE), coloured by top-level folder."""
    from imagerec.tools.viz import plot_embeddings_2d

    summary = plot_embeddings_2d(command_config(ctx), sample_size=sample_size, output=output, thumbnails=thumbnails,
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
@handle_errors
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
    config = command_config(ctx)
    with progress_bar("query", enabled=not as_json) as progress:
        if near_duplicates:
            report = near_duplicate_benchmark(config, images=edits, seed=seed, progress=progress)
            text, markdown = format_near_duplicates(report), format_near_duplicates(report, markdown=True)
        else:
            tune = TuneSettings(grid_step, metric, val_fraction) if tune_weights else None
            report = run_evaluation(config, labels_file=labels_file, sample=sample, seed=seed, ks=ks or (1, 5, 10),
                                    tune=tune, progress=progress)
            text, markdown = format_table(report), format_table(report, markdown=True)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else text)
    if output is not None:
        output.write_text(markdown + "\n", encoding="utf-8")
        click.echo(f"report written to {output}", err=as_json)
    if write_config is not None:
        path = write_weights_config(config, report.tuning.best, write_config)
        click.echo(f"best weights written to {path} (query.w_*)", err=as_json)
