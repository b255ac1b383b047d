"""DreamBooth LoRA training: config and presets, the shared photos->LoRA path (``product``), the trainer
(``loop``), its data, conditioning, adapters, checkpoints and exports. (``TrainResult`` lives with the
other records; local folders are trained by ``product_studio.folder_training``.)

Importing this package loads neither torch nor diffusers; they are imported when training starts.
"""

from product_studio.records import TrainResult
from product_studio.training.adapters import ADAPTER
from product_studio.training.checkpoints import Checkpoints
from product_studio.training.config import TrainConfig
from product_studio.training.data import (
    PhotoError,
    TrainingImage,
    from_cutout,
    load_photo_folder,
    load_training_image,
)
from product_studio.training.export import KOHYA_FILE, LORA_FILE, read_metadata
from product_studio.training.loop import TrainingError, train_lora, worth_retrying
from product_studio.training.presets import PRESETS
from product_studio.training.product import train_product

__all__ = [
    "ADAPTER",
    "KOHYA_FILE",
    "LORA_FILE",
    "PRESETS",
    "Checkpoints",
    "PhotoError",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingImage",
    "from_cutout",
    "load_photo_folder",
    "load_training_image",
    "read_metadata",
    "train_lora",
    "train_product",
    "worth_retrying",
]
