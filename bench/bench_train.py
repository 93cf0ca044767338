"""Training throughput: the real loop (memmap cache + batched augmentation + step) vs the raw step ceiling.

Both are measured in one run, on the same device, threads, model, head, loss, optimiser, batch size and
image size; the ceiling feeds random tensors that are already on the device. Target: real/ceiling
>= 0.80 on CPU, >= 0.70 on a CUDA GPU.

    .venv/bin/python bench/bench_train.py --images 2000 --image-size 96 --batch-size 128
    .venv/bin/python bench/bench_train.py --device cuda --images 5000 --batch-size 512 --stem small
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "caltech101" / "101_ObjectCategories"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder of real photos (class folders).")
    parser.add_argument("--images", type=int, default=1000, help="Photos to train on (cache size).")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--stem", choices=["imagenet", "small"], default="imagenet")
    parser.add_argument("--epochs", type=int, default=2, help="Real-loop epochs; the last one is timed.")
    parser.add_argument("--ceiling-steps", type=int, default=5, help="Timed raw steps (after 2 warm-up steps), run before and after.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default CPU count).")
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--workdir", type=Path, default=None, help="Where the cache goes (default: a temp folder, removed).")
    return parser.parse_args(argv)


def main() -> None:
    _, text = run(parse_args())
    print(text)


def run(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """Raw step ceiling before and after the real training loop: (figures, markdown report)."""
    from imagerec.config import Config
    from imagerec.embed.device import select_device, set_torch_threads
    from imagerec.train.run import train_embeddings

    device = select_device(args.device)
    threads = args.threads or os.cpu_count() or 1
    set_torch_threads(threads, device)
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagerec_bench_train_"))
    config = Config.model_validate({
        "data": {"image_root": args.data}, "output": {"dir": workdir},
        "runtime": {"device": device.type, "threads": threads}, "model": {"arch": "resnet18", "init": "random"},
        "train": {"max_images": args.images, "val_fraction": 0.0, "epochs": args.epochs, "batch_size": args.batch_size,
                  "image_size": args.image_size, "stem": args.stem, "warmup_epochs": 0, "channels_last": channels_last},
    })
    use_cl = channels_last if channels_last is not None else device.type == "cuda"
    try:
        before = raw_step_ceiling(args, device, use_cl)
        t0 = time.perf_counter()
        summary = train_embeddings(config)
        wall = time.perf_counter() - t0
        after = raw_step_ceiling(args, device, use_cl)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    real = summary.history[-1].images_per_s
    ceiling = (before + after) / 2
    out = [f"\n{machine(device, threads)}"]
    out.append(f"ResNet-18 ({args.stem} stem) + 512-512-128 head, NT-Xent, SGD, {args.image_size} px, batch {args.batch_size} "
          f"images (x2 views), channels_last {'on' if use_cl else 'off'}, bf16 autocast {'on' if device.type == 'cuda' else 'off'}; "
          f"{summary.train_images} real photos from {args.data}\n")
    out.append("| measurement | images/s |")
    out.append("|---|---|")
    out.append(f"| raw step ceiling (random tensors on device), before / after | {before:.1f} / {after:.1f} |")
    out.append(f"| real training loop (memmap cache + augmentation + step), epoch {summary.history[-1].epoch} | {real:.1f} |")
    out.append(f"| **ratio real / ceiling** | **{real / ceiling:.2f}** |")
    out.append(f"\nwhole run incl. cache build, model load and saves: {wall:.1f} s "
          f"(cache {'built' if summary.cache_built else 'reused'}); per-epoch images/s: "
          + ", ".join(f"{h.images_per_s:.1f}" for h in summary.history))

    figures = {"real_images_per_s": real, "ceiling_images_per_s": ceiling, "ratio": real / ceiling, "wall_s": wall}
    return figures, "\n".join(out)

def raw_step_ceiling(args, device: torch.device, channels_last: bool) -> float:
    """Images/s of the bare SimCLR step on random views already on the device."""
    from imagerec.embed import ModelSpec, architecture
    from imagerec.train.simclr import NTXentLoss, ProjectionHead
    from imagerec.train.optim import make_optimizer

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    backbone = architecture("resnet18").build(ModelSpec(stem=args.stem, image_size=args.image_size)).to(device, memory_format=fmt)
    head = ProjectionHead().to(device)
    optimizer = make_optimizer("sgd", [*backbone.parameters(), *head.parameters()], 0.01, 1e-4)
    loss_fn = NTXentLoss(0.2)
    views = torch.randn(2 * args.batch_size, 3, args.image_size, args.image_size, device=device).contiguous(memory_format=fmt)

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            z = head(backbone(views))
        loss = loss_fn(*z.float().chunk(2))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.ceiling_steps):
        step()
    _sync(device)
    return args.ceiling_steps * args.batch_size / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def machine(device: torch.device, threads: int) -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"machine: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({threads} threads){gpu}, "
            f"Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
