"""Plain-text and markdown tables of evaluation reports."""

from __future__ import annotations

from imagerec.eval.retrieval import ANN_K, SIGNALS, EvaluationReport


def format_table(report: EvaluationReport, markdown: bool = False) -> str:
    """The report as a plain-text table (or markdown with ``markdown=True``)."""
    keys = [f"p@{k}" for k in report.ks] + [f"r@{k}" for k in report.ks] + ["map"]
    w = report.weights
    head = (f"leave-one-out over {report.n_items} labelled images in {report.n_groups} groups ({report.labels}), "
            f"{report.n_queries} queries{f' (sample, seed {report.seed})' if report.sample else ''}; "
            f"exhaustive exact scoring; fused weights embedding {w.embedding:.2f}, color {w.color:.2f}, "
            f"dhash {w.dhash:.2f}; colour measure {report.color_measure}; {report.embedding_space}")
    rows = [[s, *(f"{report.signals[s][k]:.4f}" for k in keys)] for s in SIGNALS]
    lines = [head, ""] if markdown else [head]
    lines += table_lines(["signal", *keys], rows, markdown) + ([""] if markdown else [])
    lines.append(f"ANN recall@{ANN_K} vs exact cosine ({report.ann_queries} queries, ef_search {report.ef_search}): "
                 f"{report.ann_recall:.4f}")
    if report.tuning is not None:
        t = report.tuning
        m = t.metric
        title = (f"weight tuning: grid step {t.step} ({t.grid_points} points), maximising {m} on {t.val_queries} "
                 f"validation queries; scored on {t.test_queries} test queries")
        lines += ["", title, ""] if markdown else [title]
        tune_rows = []
        for name, weights in (("best", t.best), ("configured", t.configured)):
            tune_rows.append([name, f"{weights.embedding:.2f} / {weights.color:.2f} / {weights.dhash:.2f}",
                              f"{t.validation[name][m]:.4f}", f"{t.test[name][m]:.4f}",
                              *(f"{t.test[name][k]:.4f}" for k in keys if k != m)])
        lines += table_lines(["weights", "embedding / color / dhash", f"val {m}", f"test {m}",
                         *(f"test {k}" for k in keys if k != m)], tune_rows, markdown) + ([""] if markdown else [])
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append(f"({report.elapsed_s:.1f} s)")
    return "\n".join(lines)


def table_lines(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    """Rows under a header: aligned plain text, or a markdown table."""
    if markdown:
        return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).rjust(wd) if i else str(c).ljust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
            for r in [header, *rows]]
