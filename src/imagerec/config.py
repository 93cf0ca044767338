"""Config profiles: typed, validated YAML.

Unknown keys, wrong types and out-of-range values are refused before any work starts, with a message
naming the file, the key and what is expected. Relative paths resolve against the config file's folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imagerec.errors import ConfigError
from imagerec.layout import Layout

#: Keys of earlier versions and what replaced them: named in the error instead of "unknown key".
RENAMED_KEYS = {
    "query.w_phash": "query.w_dhash",
    "ann.M": "ann.hnsw.M",
    "ann.ef_construction": "ann.hnsw.ef_construction",
    "ann.ef_search": "ann.hnsw.ef_search",
}

#: Pillow format names that are decoded by default. Everything else is never handed to a decoder.
#: HEIF (.heic/.heif, through pillow-heif) and AVIF (Pillow's own) follow the same rules: header-only open,
#: pixel limit checked before decoding, orientation applied (libheif applies the HEIF transforms itself).
DEFAULT_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "HEIF", "AVIF")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    image_root: Path = Field(description="Folder scanned for images.")


class OutputConfig(_Section):
    dir: Path = Field(description="Folder for images.db, embedding_model.pt, the ANN index, cache/, checkpoints/.")

    @property
    def layout(self) -> Layout:
        """Every artefact path inside ``dir``."""
        return Layout.of(self.dir)


class RuntimeConfig(_Section):
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="torch threads; default = CPU count.")
    inference: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="CPU inference engine: auto/onnx = ONNX Runtime (exported once, checked against torch), torch = eager.",
    )


class RayConfig(_Section):
    """``index.executor: ray``: where the Ray cluster is and how decode and embedding use it (``imagerec[ray]``)."""

    address: str | None = Field(default=None, description="null: start a local Ray instance; 'auto': the running cluster; 'ray://host:10001'.")
    embed_actors: int | None = Field(default=None, ge=1, description="Embedding actors; null = one per GPU of the cluster, else 1.")
    actor_cpus: float = Field(default=0.5, gt=0.0, le=64.0, description="CPUs reserved per CPU embedding actor (0.5 keeps a 2-core instance moving).")
    decode_cpus: float = Field(default=1.0, gt=0.0, le=64.0, description="CPUs reserved per decode task.")
    chunk_rows: int = Field(default=50_000, ge=1, le=10_000_000, description="Files per manifest file (written as the scan streams; decode tasks take 1,024-row groups of it).")
    keep_shards: bool = Field(default=False, description="Keep the Parquet shards after they are ingested (else deleted).")


class IndexConfig(_Section):
    executor: Literal["local", "ray"] = Field(default="local", description="local: worker processes here; ray: a Ray cluster (imagerec[ray]).")
    ray: RayConfig = RayConfig()
    workers: int | None = Field(default=None, ge=1, description="Decode processes; default = CPU count.")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Images per model batch and per transaction.")
    max_image_pixels: int = Field(default=178_956_970, ge=1, description="Larger images are refused as bombs.")
    decoder: Literal["auto", "pillow"] = Field(
        default="auto", description="auto: PNG and WebP through libvips (pyvips) at a reduced size, else Pillow; pillow: Pillow only.")
    formats: tuple[str, ...] = Field(default=DEFAULT_FORMATS, min_length=1)
    follow_symlinks: bool = False
    max_removal_fraction: float = Field(
        default=0.2, ge=0.0, le=1.0,
        description="A scan that would remove more than this share of the stored images (or all of them) removes "
                    "nothing unless 'index --prune' confirms it: an unmounted drive must not wipe the collection.",
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        from PIL import Image

        from imagerec.data.formats import register_plugins

        register_plugins()
        known = set(Image.OPEN)
        unknown = [f for f in formats if f.upper() not in known]
        if unknown:
            raise ValueError(f"unknown Pillow format(s) {unknown}; known: {sorted(known)}")
        return tuple(f.upper() for f in formats)


class HistogramConfig(_Section):
    space: Literal["rgb", "hsv"] = "rgb"
    bins: int = Field(default=8, ge=2, le=32, description="Bins per channel (joint histogram has bins**3).")


class FeaturesConfig(_Section):
    histogram: HistogramConfig = HistogramConfig()


class HnswConfig(_Section):
    """FAISS ``IndexHNSWFlat`` parameters (``ann.kind: hnsw``)."""

    M: int = Field(default=32, ge=4, le=128, description="Graph degree; more = better recall, more memory and build time.")
    ef_construction: int = Field(default=200, ge=8, le=4096, description="Build-time beam width.")
    ef_search: int | None = Field(default=None, ge=8, le=8192, description="Query-time beam width (raised to the candidate "
                                  "count); null = from the index size: vectors/256 within 256–1536.")
    fill_level0: bool = Field(default=True, description="Fill each level-0 neighbour list up to 2M with links the "
                              "heuristic pruned: keeps members of tight groups reachable (recall at 550k).")


class IvfPqConfig(_Section):
    """FAISS ``IVF,PQ`` parameters (``ann.kind: ivfpq``); null = chosen from the collection size and dimension."""

    nlist: int | None = Field(default=None, ge=1, le=1 << 20, description="Inverted lists; null = the power of two nearest 4·√N.")
    m: int | None = Field(default=None, ge=1, le=256, description="PQ bytes per vector (must divide the dimension); null = largest divisor ≤ 64.")
    nbits: int = Field(default=8, ge=4, le=12, description="Bits per PQ code.")
    nprobe: int | None = Field(default=None, ge=1, le=1 << 20, description="Lists scanned per query; null = nlist/16 within 8–256.")
    candidate_factor: float = Field(default=2.5, ge=1.0, le=100.0, description="A query re-ranks this many times query.candidates exactly (PQ scores are approximate).")
    mmap: bool = Field(default=True, description="Memory-map the index file (codes stay in the OS file cache: ~35 private bytes per vector instead of ~106).")


class WhiteningConfig(_Section):
    """Partial whitening fitted on the collection by ``build-ann``; query, serve and evaluate re-rank in it."""

    dims: int = Field(default=128, ge=0, le=4096, description="Principal directions kept; 0 = off (plain cosine). Used "
                      "only when the collection has at least 8 embeddings per direction (ann.whitening.ROWS_PER_DIM).")
    power: float = Field(default=0.25, ge=0.0, le=1.0, description="Each direction is divided by its variance to the "
                         "power/2: 1 = full whitening, 0 = projection only.")
    raw_share: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of the plain cosine in the embedding score "
                             "(the rest: cosine after whitening); the plain cosine keeps crops and flips on top.")


class AnnConfig(_Section):
    """The ANN index over embeddings (``build-ann``): which backend, its parameters, and how it is built."""

    kind: Literal["auto", "hnsw", "ivfpq"] = Field(
        default="auto", description="Index backend (its parameters live under the key of that name); auto = hnsw while "
                                    "it fits in memory_budget, else ivfpq.")
    memory_budget: int = Field(default=4096, ge=1, description="MiB of RAM an HNSW index may take under kind: auto.")
    hnsw: HnswConfig = HnswConfig()
    ivfpq: IvfPqConfig = IvfPqConfig()
    whitening: WhiteningConfig = WhiteningConfig()
    threads: int | None = Field(default=None, ge=1, description="Build threads; default = CPU count.")
    build_chunk: int = Field(
        default=10_000, ge=100, le=50_000,
        description="Embeddings read from SQLite and added per step (FAISS HNSW built in one huge add() loses recall).",
    )
    verify: Literal["auto", "always"] = Field(
        default="auto", description="auto: full checksum unless a file is big and untouched since build; always: full checksum."
    )


class QueryConfig(_Section):
    """Candidate generation and weighted re-ranking for ``query``."""

    top_k: int = Field(default=10, ge=1, le=10_000)
    w_embedding: float | None = Field(default=None, ge=0.0, description="Weight of embedding cosine similarity; null = the model's default.")
    w_color: float | None = Field(default=None, ge=0.0, description="Weight of colour-histogram similarity; null = the model's default.")
    w_dhash: float | None = Field(default=None, ge=0.0, description="Weight of dHash similarity (1 - Hamming/64); null = the model's default.")
    candidates: int = Field(default=200, ge=1, le=100_000, description="At least this many ANN candidates are re-ranked.")
    candidates_per_k: int = Field(default=10, ge=1, le=1000, description="... and at least this many per requested result.")
    color_measure: Literal["bhattacharyya", "intersection"] = "bhattacharyya"
    near_duplicate_max_bits: int = Field(default=4, ge=0, le=64, description="dHash Hamming distance counted as near-duplicate.")
    same_photo_top: int = Field(
        default=5, ge=0, le=100,
        description="The best fused candidates checked for being the query's own photo (cropped, rescaled, re-encoded); 0: off.",
    )
    same_photo_min_correlation: float = Field(
        default=0.95, ge=0.0, le=1.0,
        description="Thumbnail correlation at which a checked candidate counts as the same photo: it moves first, marked near-duplicate.",
    )
    hash_candidates_max_bits: int | None = Field(
        default=8, ge=0, le=32,
        description="Images within this dHash distance of a query join the candidates (None: ANN candidates only).",
    )
    embed_threads: int = Field(
        default=1, ge=1, description="torch threads for embedding one query image (1 is fastest for a single image on a busy CPU).",
    )

    @model_validator(mode="after")
    def _weights_not_all_zero(self) -> "QueryConfig":
        given = (self.w_embedding, self.w_color, self.w_dhash)
        if None not in given and sum(given) <= 0:
            raise ValueError("w_embedding, w_color and w_dhash must not all be 0")
        return self


class DuplicatesConfig(_Section):
    """``duplicates``: what counts as an exact copy, an edited copy (near) and the same scene (similar).

    Defaults chosen on the near-duplicate benchmark (``bench/bench_duplicates.py``, docs/benchmarks.md §11)."""

    max_bits: int = Field(default=10, ge=0, le=32, description="dHash Hamming distance of an edited copy (near tier).")
    near_similarity: float = Field(default=0.90, ge=-1.0, le=1.0, description="Embedding cosine that confirms a near pair.")
    close_bits: int = Field(default=3, ge=0, le=32, description="A pair this close in dHash needs only close_similarity.")
    close_similarity: float = Field(default=0.5, ge=-1.0, le=1.0, description="Cosine that confirms a pair within close_bits.")
    near_color: float = Field(default=0.95, ge=0.0, le=1.0, description="Colour-histogram agreement (Bhattacharyya) that confirms a near pair without embeddings.")
    min_similarity: float = Field(default=0.94, ge=-1.0, le=1.0, description="Embedding cosine of the same scene (similar tier).")
    group_similarity: float = Field(default=0.70, ge=-1.0, le=1.0, description="Cosine every two members of a group must reach (chains of edits do not merge unrelated photos).")
    tier: Literal["exact", "near", "similar"] = Field(default="similar", description="Loosest relation a group may use.")
    neighbours: int = Field(default=4, ge=1, le=200, description="Embedding neighbours examined per image (more: slower, finds more of a big burst at once).")


#: Input size of each architecture when ``model.input_size`` is null (EfficientNet-Lite0's ImageNet size; the seed's 96 px).
DEFAULT_INPUT_SIZE = {"efficientnet_lite0": 224, "resnet18": 96}


class ModelConfig(_Section):
    """The embedding network: used as it is until ``train-embeddings`` writes a model file, and trained from there."""

    arch: Literal["efficientnet_lite0", "resnet18"] = Field(default="efficientnet_lite0", description="Network architecture.")
    init: Literal["imagenet", "random"] = Field(
        default="imagenet",
        description="imagenet: pretrained weights (embeddings from the first 'index'; training fine-tunes them); "
                    "random: nothing is embedded until 'train-embeddings' has trained a model (the seed recipe).",
    )
    input_size: int | None = Field(default=None, ge=32, le=1024,
                                   description="Input size in px; null = the architecture's (224 efficientnet_lite0, 96 resnet18).")
    embed_size: int | None = Field(default=None, ge=16, le=1024,
                                   description="Input size in px when embedding with a trained model file; null = the size it was trained at.")

    @property
    def size(self) -> int:
        """``input_size``, or the architecture's default."""
        return self.input_size or DEFAULT_INPUT_SIZE[self.arch]


class AugmentConfig(_Section):
    """SimCLR augmentation strengths (``train-embeddings``)."""

    crop_min_scale: float = Field(default=0.2, gt=0.0, le=1.0, description="Smallest random crop, as a fraction of the image area.")
    flip_p: float = Field(default=0.5, ge=0.0, le=1.0)
    jitter_strength: float = Field(default=0.5, ge=0.0, le=1.25, description="s: brightness/contrast/saturation ±0.8s, hue ±0.2s.")
    jitter_p: float = Field(default=0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(default=0.2, ge=0.0, le=1.0)
    blur_p: float = Field(default=0.5, ge=0.0, le=1.0, description="Gaussian blur probability (sigma 0.1-2.0 px at 224 px, scaled).")


class TrainConfig(_Section):
    """SimCLR training of the embedding model (``train-embeddings``)."""

    max_images: int = Field(default=50_000, ge=2, description="Deterministic random subset (by seed) of the images found.")
    file_list: Path | None = Field(default=None, description="Optional text file of paths relative to data.image_root to train on (relative to the config file).")
    val_fraction: float = Field(default=0.1, ge=0.0, le=0.5, description="Held out for validation (seeded split).")
    seed: int = Field(default=0, ge=0)
    epochs: int | None = Field(default=None, ge=1, le=100_000, description="null = 100 from random init, 5 when fine-tuning a pretrained model.")
    batch_size: int = Field(default=256, ge=2, le=65_536, description="Images per step (each gives two views).")
    image_size: int | None = Field(default=None, ge=16, le=512, description="Training and embedding input size in pixels; null = model.input_size.")
    stem: Literal["imagenet", "small"] = Field(default="imagenet", description="small = 3x3/stride-1 stem: better at low resolution, ~16x the compute.")
    trainable_stages: int | None = Field(default=None, ge=1, description="Train only the backbone's last N stages; the earlier ones keep their weights and batch-norm statistics (faster steps). null = all from random init, 2 when fine-tuning.")
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = Field(default=None, gt=0.0, le=10.0, description="Peak learning rate per 256 images, scaled linearly with batch_size; null = 0.15 (sgd) or 1e-3 (adamw) from random init, 0.4 of that when fine-tuning.")
    weight_decay: float | None = Field(default=None, ge=0.0, le=1.0, description="null = 1e-4 (sgd) or 0.05 (adamw); not applied to biases and batch norm.")
    warmup_epochs: float | None = Field(default=None, ge=0.0, description="Linear warm-up, then cosine decay to 0; null = 5 % of the run. Never more than 10 % of the steps.")
    temperature: float = Field(default=0.2, ge=0.01, le=10.0, description="NT-Xent temperature.")
    augment: AugmentConfig = AugmentConfig()
    workers: int | None = Field(default=None, ge=1, description="Decode processes for the training cache; default = CPU count.")
    checkpoint_every_steps: int = Field(default=0, ge=0, description="Also checkpoint every N steps (0 = once per epoch).")
    channels_last: bool | None = Field(default=None, description="Memory format; null = on for CUDA, off for CPU.")


class WebConfig(_Section):
    """The local web app (``serve``)."""

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind; anything but loopback exposes the collection to the network.")
    port: int = Field(default=8765, ge=0, le=65535, description="TCP port (0 = any free port).")
    max_upload_bytes: int = Field(default=20_000_000, ge=1024, description="Largest upload request body; larger ones are refused (413) while streaming.")
    max_upload_images: int = Field(default=8, ge=1, le=100, description="Most query images in one upload search.")
    thumbnail_sizes: tuple[int, ...] = Field(default=(128, 256, 512), min_length=1, description="Thumbnail sizes (longest side, px) the server makes and caches; query's same-photo check reads the smallest of at least 96.")


class Config(_Section):
    """A whole config profile. ``source`` is the file it was read from (None when built in code)."""

    data: DataConfig
    output: OutputConfig
    runtime: RuntimeConfig = RuntimeConfig()
    index: IndexConfig = IndexConfig()
    ann: AnnConfig = AnnConfig()
    query: QueryConfig = QueryConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    web: WebConfig = WebConfig()
    duplicates: DuplicatesConfig = DuplicatesConfig()
    source: Path | None = Field(default=None, exclude=True)

    def with_overrides(self, overrides: dict[str, Any]) -> "Config":
        """Return a copy with dotted keys (``"index.workers"``) replaced; ``None`` values are ignored."""
        raw = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.get(key) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"command-line option: unknown key '{dotted}'")
            node[leaf] = value
        raw["source"] = self.source
        return _validate(raw, self.source, where="command-line option")


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a YAML config profile."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    except RecursionError:
        raise ConfigError(f"{path}: not a config file (nested too deeply to read)") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections 'data' and 'output' at the top level")
    base = path.resolve().parent
    for section, key in (("data", "image_root"), ("output", "dir")):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{path}: key '{section}.{key}' is empty; give a folder (relative paths resolve against the config file's folder)")
        if isinstance(value, str):
            raw[section][key] = base / os.path.expanduser(value)
    raw["source"] = path
    return _validate(raw, path, where=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (YAML would let the last one win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice (line {key_node.start_mark.line + 1}); keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _validate(raw: dict[str, Any], source: Path | None, where: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None


def _describe(err: Any) -> str:
    key = ".".join(str(part) for part in err["loc"])
    if err["type"] == "extra_forbidden" and key in RENAMED_KEYS:
        return f"key '{key}' was renamed to '{RENAMED_KEYS[key]}' (rename it in the config)"
    if err["type"] == "extra_forbidden":
        return f"unknown key '{key}' (remove it or check its spelling)"
    if err["type"] == "missing":
        return f"missing key '{key}'"
    given = err.get("input")
    return f"key '{key}': {err['msg'].lower()} (got {given!r})"
