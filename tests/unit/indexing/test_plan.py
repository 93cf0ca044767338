"""plan_chunk on hand-made stored states: every classification, and no hidden inputs or writes."""

from __future__ import annotations

import inspect
from types import MappingProxyType

from imagerec.data.scan import ScannedFile
from imagerec.indexing import plan as plan_module
from imagerec.indexing.plan import ChunkPlan, WorkItem, batched, plan_chunk
from imagerec.store import StoredState

KEY = "rgb8x8x8-box128"
MODEL = "model-b"


def f(name: str, size: int = 100, mtime: int = 1_000) -> ScannedFile:
    return ScannedFile(name.encode(), size, mtime, "JPEG")


CHUNK = [
    f("new.jpg"),  # nothing stored
    f("same.jpg"),  # same file, same histogram key, same model
    f("resized.jpg", size=200),  # size changed
    f("touched.jpg", mtime=2_000),  # mtime changed
    f("old_model.jpg"),  # same file, embedding of another model
    f("no_embedding.jpg"),  # same file, no embedding at all
    f("old_hist.jpg"),  # same file, other histogram settings
    f("broken.jpg"),  # recorded as skipped, unchanged
    f("fixed.jpg", mtime=3_000),  # recorded as skipped, changed since
]
STORED = {
    b"same.jpg": StoredState(1, 100, 1_000, KEY, MODEL),
    b"resized.jpg": StoredState(2, 100, 1_000, KEY, MODEL),
    b"touched.jpg": StoredState(3, 100, 1_000, KEY, MODEL),
    b"old_model.jpg": StoredState(4, 100, 1_000, KEY, "model-a"),
    b"no_embedding.jpg": StoredState(5, 100, 1_000, KEY, None),
    b"old_hist.jpg": StoredState(6, 100, 1_000, "rgb4x4x4-box128", MODEL),
}
SKIPPED = {b"broken.jpg": (100, 1_000), b"fixed.jpg": (100, 1_000)}


def _by_path(plan: ChunkPlan) -> dict[bytes, WorkItem]:
    return {item.file.rel_path: item for item in plan.items}


def test_every_case_is_classified():
    plan = plan_chunk(CHUNK, MappingProxyType(STORED), MappingProxyType(SKIPPED), KEY, MODEL)
    items = _by_path(plan)
    assert (plan.unchanged, plan.skipped_known) == (1, 1)  # same.jpg; broken.jpg
    assert set(items) == {b"new.jpg", b"resized.jpg", b"touched.jpg", b"old_model.jpg", b"no_embedding.jpg",
                          b"old_hist.jpg", b"fixed.jpg"}
    full = {p for p, item in items.items() if not item.embedding_only}
    assert full == {b"new.jpg", b"resized.jpg", b"touched.jpg", b"old_hist.jpg", b"fixed.jpg"}
    assert all(items[p].image_id is None for p in full)  # recomputed rows are matched by path, not id
    assert items[b"old_model.jpg"] == WorkItem(CHUNK[4], 4, embedding_only=True)
    assert items[b"no_embedding.jpg"] == WorkItem(CHUNK[5], 5, embedding_only=True)
    assert [i.file for i in plan.items] == [c for c in CHUNK if c.rel_path in items]  # scan order kept


def test_without_a_model_embeddings_never_make_work():
    plan = plan_chunk(CHUNK, STORED, SKIPPED, KEY, None)
    items = _by_path(plan)
    assert plan.unchanged == 3  # same, old_model, no_embedding
    assert not any(item.embedding_only for item in plan.items)
    assert b"old_model.jpg" not in items and b"no_embedding.jpg" not in items


def test_a_stored_image_wins_over_a_stale_skip_record():
    stored = {b"x.jpg": StoredState(9, 100, 1_000, KEY, MODEL)}
    skipped = {b"x.jpg": (100, 1_000)}
    assert plan_chunk([f("x.jpg")], stored, skipped, KEY, MODEL) == ChunkPlan((), 1, 0)
    changed = plan_chunk([f("x.jpg", size=5)], stored, skipped, KEY, MODEL)
    assert changed.items == (WorkItem(f("x.jpg", size=5), None, embedding_only=False),)
    assert changed.skipped_known == 0


def test_plan_is_pure():
    """Same inputs, same answer; read-only inputs suffice; no store in reach of the planner."""
    before = (dict(STORED), dict(SKIPPED), list(CHUNK))
    first = plan_chunk(tuple(CHUNK), MappingProxyType(STORED), MappingProxyType(SKIPPED), KEY, MODEL)
    assert plan_chunk(CHUNK, STORED, SKIPPED, KEY, MODEL) == first
    assert (STORED, SKIPPED, CHUNK) == before
    assert "store" not in inspect.signature(plan_chunk).parameters
    assert "Store" not in vars(plan_module) and "Config" not in vars(plan_module)
    assert plan_chunk([], {}, {}, KEY, MODEL) == ChunkPlan((), 0, 0)


def test_batched_is_lazy_and_keeps_the_tail():
    pulled = []

    def numbers():
        for i in range(7):
            pulled.append(i)
            yield i

    batches = batched(numbers(), 3)
    assert next(batches) == [0, 1, 2] and pulled == [0, 1, 2]
    assert list(batches) == [[3, 4, 5], [6]]
