"""The CLI's progress bars: one tqdm bar per stage of ProgressEvents."""

from __future__ import annotations

import io

from imagerec.progress import ProgressEvent


def test_cli_training_bars_one_per_stage(monkeypatch):
    """train-embeddings draws its bars with the CLI's per-stage event bar: a new stage, a new bar."""
    import tqdm

    opened: list[dict] = []
    real = tqdm.tqdm

    def recording(*args, **kwargs):
        opened.append(kwargs)
        return real(*args, **{**kwargs, "file": io.StringIO()})

    monkeypatch.setattr(tqdm, "tqdm", recording)
    from imagerec.cli.progress import EventBar

    bars = EventBar("img")
    seen = []
    for event in [ProgressEvent("decode", 16, 25), ProgressEvent("decode", 25, 25), ProgressEvent("epoch 2/2", 8, 16),
                  ProgressEvent("epoch 2/2", 16, 16, {"step": 4})]:
        bars(event)
        seen.append((bars.bar, bars.bar.n))
    assert [(k["desc"], k["total"]) for k in opened] == [("decode", 25), ("epoch 2/2", 16)]
    assert [n for _, n in seen] == [16, 25, 8, 16]
    assert seen[0][0] is seen[1][0] and seen[1][0] is not seen[2][0] and seen[2][0] is seen[3][0]
    bars.close()
    assert bars.bar is None
