"""Fuzz the image loader: mutated real files in, an image or an ``ImageLoadError`` out, nothing else, fast.

Seeded mutation loop (bit flips, byte overwrites, truncations, splices of two files, chunk repeats) over
the bad-inputs corpus and the camera samples (files up to 512 KB); every input goes through
``load_image`` with the default allow-list and pixel limit, under the format hint of its seed file or of
another allowed format. Any other exception, or an input taking longer than ``--slow-s``, is a finding:
the input is saved under ``--out`` and the run exits 1. ``--atheris`` runs the same target under atheris
(coverage-guided, if installed) instead.

    python bench/fuzz_loader.py --inputs 20000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGEREC_SHARED_DATA", REPO.parent / "shared" / "data"))
MAX_SEED_BYTES = 512 * 1024
INTERESTING = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]

sys.path.insert(0, str(REPO / "src"))
from imagerec.config import DEFAULT_FORMATS  # noqa: E402
from imagerec.data.loading import LoadSettings, load_image  # noqa: E402
from imagerec.data.scan import format_hint  # noqa: E402
from imagerec.errors import ImageLoadError  # noqa: E402

SETTINGS = LoadSettings(DEFAULT_FORMATS, max_pixels=178_956_970, min_side=64)


def corpus(roots: list[Path]) -> list[tuple[bytes, str]]:
    """(content, format hint) of every image-like file of at most MAX_SEED_BYTES under ``roots``, sorted by path."""
    seeds = []
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            hint = format_hint(path.name)
            if hint is not None and 0 < path.stat().st_size <= MAX_SEED_BYTES:
                seeds.append((path.read_bytes(), hint))
    return seeds


def mutate(data: bytes, other: bytes, rng: random.Random) -> bytes:
    """One random mutation of ``data`` (``other``: a second seed, for splices)."""
    buf = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # a few bit flips, biased to the header where the parsers are
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(len(buf), 512)) if rng.random() < 0.7 else rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # overwrite bytes with boundary values
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] = rng.choice(INTERESTING)
    elif kind == 2:  # truncate
        buf = buf[: rng.randrange(1, len(buf) + 1)]
    elif kind == 3:  # splice: head of this file, tail of another
        buf = buf[: rng.randrange(len(buf) + 1)] + other[rng.randrange(len(other) + 1):]
    elif kind == 4:  # repeat a chunk
        i = rng.randrange(len(buf))
        buf[i:i] = buf[i : i + rng.randint(1, 256)] * rng.randint(1, 16)
    else:  # overwrite a 32-bit field with a huge or tiny number (sizes, offsets, counts)
        i = rng.randrange(max(1, min(len(buf), 256) - 4))
        buf[i : i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"])
    return bytes(buf)


def check_one(data: bytes, hint: str, path: Path) -> tuple[str, float]:
    """Load ``data`` from ``path``; (outcome, seconds): 'ok', a skip reason, or 'BUG <exception>'."""
    path.write_bytes(data)
    started = time.perf_counter()
    try:
        load_image(path, SETTINGS, hint)
        outcome = "ok"
    except ImageLoadError as exc:
        outcome = exc.reason
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        outcome = f"BUG {type(exc).__name__}: {exc}"[:200]
    return outcome, time.perf_counter() - started


def fuzz(inputs: int, seed: int, slow_s: float, out: Path) -> dict:
    """Run ``inputs`` mutated inputs; a JSON-safe report (findings saved under ``out``)."""
    seeds = corpus([SHARED / "bad-inputs", SHARED / "camera-samples"])
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    findings, slowest = [], (0.0, "")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        path = Path(tmp) / "input"
        for n in range(inputs):
            data, hint = rng.choice(seeds)
            mutated = mutate(data, rng.choice(seeds)[0], rng) if data else data
            if rng.random() < 0.2:
                hint = rng.choice(DEFAULT_FORMATS)  # a file whose extension lies
            outcome, seconds = check_one(mutated, hint, path)
            if seconds > slow_s:  # a shared machine stalls now and then: slow means slow every time
                seconds = min(seconds, *(check_one(mutated, hint, path)[1] for _ in range(2)))
            outcomes[outcome.split(":")[0]] += 1
            slowest = max(slowest, (seconds, f"input {n} ({hint})"))
            if outcome.startswith("BUG") or seconds > slow_s:
                out.mkdir(parents=True, exist_ok=True)
                saved = out / f"finding_{seed}_{n}.{hint.lower()}"
                saved.write_bytes(mutated)
                findings.append({"input": n, "hint": hint, "outcome": outcome, "seconds": round(seconds, 3), "saved": str(saved)})
    return {"inputs": inputs, "seed": seed, "seed_files": len(seeds), "seconds": round(time.perf_counter() - started, 1),
            "slowest_s": round(slowest[0], 3), "slowest": slowest[1], "outcomes": dict(outcomes.most_common()),
            "findings": findings}


def run_atheris(argv: list[str]) -> None:  # pragma: no cover - on demand only
    """The same target under atheris: every input through ``load_image``; anything but ImageLoadError is a crash."""
    import atheris

    path = Path(tempfile.mkdtemp()) / "input"

    def target(data: bytes) -> None:
        if len(data) < 2:
            return
        hint = DEFAULT_FORMATS[data[0] % len(DEFAULT_FORMATS)]
        path.write_bytes(data[1:])
        try:
            load_image(path, SETTINGS, hint)
        except ImageLoadError:
            pass

    atheris.Setup(argv, target)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--slow-s", type=float, default=2.0, help="An input slower than this is a finding.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "fuzz")
    parser.add_argument("--atheris", action="store_true", help="Run under atheris instead (extra args go to libFuzzer).")
    args, rest = parser.parse_known_args()
    if args.atheris:
        run_atheris([sys.argv[0], *rest])
        return 0
    report = fuzz(args.inputs, args.seed, args.slow_s, args.out)
    print(json.dumps(report, indent=2))
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
