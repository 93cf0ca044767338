"""``duplicates``: print (or write as JSON/CSV/contact sheets) the duplicate groups of the collection."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import click

from imagerec.cli.app import cli, command_config, handle_errors
from imagerec.cli.progress import progress_bar
from imagerec.dedup import TIERS, DuplicateReport, DuplicateSettings
from imagerec.store.records import printable

CSV_COLUMNS = ["group", "tier", "keep", "id", "path", "width", "height", "size", "mtime", "hamming", "cosine"]


@cli.command()
@click.option("--max-bits", type=click.IntRange(0, 32), help="dHash Hamming distance of an edited copy (duplicates.max_bits).")
@click.option("--min-similarity", type=click.FloatRange(-1.0, 1.0),
              help="Embedding cosine of the same scene, the similar tier (duplicates.min_similarity).")
@click.option("--tier", type=click.Choice(TIERS), help="Loosest relation a group may use: exact ⊂ near ⊂ similar (duplicates.tier).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write one row per group member here.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), help="Also write a contact sheet per group into this folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
@handle_errors
def duplicates(ctx, max_bits, min_similarity, tier, as_json, csv_path, output, quiet) -> None:
    """Groups of duplicate photos in the indexed collection: exact copies, edited copies, same scene.

    Each group lists its members with size, date and the evidence (dHash bits, embedding cosine)
    against the suggested keeper (most pixels, then largest file, then oldest). Nothing is deleted,
    moved or renamed: decide yourself what to remove.
    """
    from imagerec.dedup import find_duplicates

    config = command_config(ctx)
    settings = DuplicateSettings.from_config(config, max_bits=max_bits, min_similarity=min_similarity, tier=tier)
    with progress_bar("step", enabled=not (quiet or as_json)) as bar:
        report = find_duplicates(config, settings, progress=bar)
    if csv_path is not None:
        write_csv(report, csv_path)
    if output is not None:
        from imagerec.tools.render import render_group_sheet

        for number, group in enumerate(report.groups, 1):
            render_group_sheet(group, config, output / f"group_{number:05d}_{group.tier}.png")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
        return
    for line in format_report(report):
        click.echo(line)
    if csv_path is not None:
        click.echo(f"wrote {csv_path}")
    if output is not None and report.groups:
        click.echo(f"wrote {report.n_groups} contact sheets to {output}")


def format_report(report: DuplicateReport) -> list[str]:
    """The groups as text: one header line per group, one line per member (the keeper marked '*')."""
    lines = []
    for number, group in enumerate(report.groups, 1):
        lines.append(f"group {number}: {group.tier}, {len(group.members)} images, keep id {group.keep}")
        for m in sorted(group.members, key=lambda m: not m.keep):
            evidence = "keeper" if m.keep else f"{m.hamming:2d} bits" + (f", cosine {m.cosine:.3f}" if m.cosine is not None else "")
            day = time.strftime("%Y-%m-%d", time.localtime(m.mtime))
            lines.append(f"  {'*' if m.keep else ' '} {m.id:>8}  {m.width}x{m.height:<6} {_size(m.size):>9}  {day}  "
                         f"{evidence:<24} {printable(m.path)}")
    tiers = ", ".join(f"{report.by_tier().get(t, 0)} {t}" for t in TIERS)
    lines.append(f"{report.n_groups} groups ({tiers}), {report.n_images_in_groups} of {report.images} images; "
                 f"{report.timings.get('total_s', 0):.1f} s. Nothing was moved or deleted.")
    lines += [f"note: {n}" for n in report.notices]
    return lines


def write_csv(report: DuplicateReport, path: Path) -> None:
    """One row per member of every group (columns ``CSV_COLUMNS``)."""
    from imagerec.errors import ImagerecError

    try:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for number, g in enumerate(report.groups, 1):
                for m in g.members:
                    writer.writerow([number, g.tier, int(m.keep), m.id, m.path, m.width, m.height, m.size, m.mtime,
                                     m.hamming, "" if m.cosine is None else m.cosine])
    except OSError as exc:
        raise ImagerecError(f"{path}: cannot write CSV ({exc.strerror or exc})") from None


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
