"""What a training run reads from the config: taken once, at the edge (``train_embeddings``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imagerec.config import Config, ModelConfig, TrainConfig
from imagerec.data import loading
from imagerec.layout import Layout


SCRATCH_EPOCHS = 100
FINE_TUNE_EPOCHS = 5
FINE_TUNE_TRAINABLE_STAGES = 2  # from pretrained weights only the last stages adapt (and steps are cheaper)


@dataclass(frozen=True)
class TrainSettings:
    """The ``train`` section plus the few other facts training needs; everything below takes this."""

    train: TrainConfig
    model: ModelConfig
    layout: Layout
    image_root: Path
    follow_symlinks: bool
    formats: tuple[str, ...]
    max_image_pixels: int
    file_list: Path | None  # resolved against the config file's folder
    device: str
    threads: int | None
    where: str  # the config file, for messages

    @classmethod
    def from_config(cls, config: Config) -> "TrainSettings":
        file_list = None
        if config.train.file_list is not None:
            file_list = Path(os.path.expanduser(config.train.file_list))
            if not file_list.is_absolute():
                file_list = (config.source.resolve().parent if config.source else Path.cwd()) / file_list
        return cls(train=config.train, model=config.model, layout=config.output.layout, image_root=Path(config.data.image_root),
                   follow_symlinks=config.index.follow_symlinks, formats=config.index.formats,
                   max_image_pixels=config.index.max_image_pixels, file_list=file_list, device=config.runtime.device,
                   threads=config.runtime.threads, where=str(config.source or "the config"))

    @property
    def image_size(self) -> int:
        """Training (and so embedding) input size: ``train.image_size``, else ``model.input_size`` or its default."""
        return self.train.image_size or self.model.size

    @property
    def fine_tuning(self) -> bool:
        """True when training starts from pretrained weights (``model.init: imagenet``)."""
        return self.model.init == "imagenet"

    @property
    def epochs(self) -> int:
        """``train.epochs``, else the recipe's: 100 from scratch, 5 when fine-tuning."""
        return self.train.epochs or (FINE_TUNE_EPOCHS if self.fine_tuning else SCRATCH_EPOCHS)

    @property
    def trainable_stages(self) -> int | None:
        """``train.trainable_stages``, else the recipe's: None (every stage) from scratch, 2 when fine-tuning."""
        if self.train.trainable_stages is not None:
            return self.train.trainable_stages
        return FINE_TUNE_TRAINABLE_STAGES if self.fine_tuning else None

    def load_settings(self) -> loading.LoadSettings:
        """How the cache decodes: the index's allow-list and pixel limit, at the training input size."""
        return loading.LoadSettings(self.formats, self.max_image_pixels, self.image_size)
