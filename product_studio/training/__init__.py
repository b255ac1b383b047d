"""Training: photos -> a DreamBooth LoRA with class-prior preservation.

Owns the trainer's config and presets, the class images of the frozen base model (``priors``: cached and
shared per class), the shared photos->LoRA path (``product``), the loop every family shares (``loop``) with
each family's objective, its data, conditioning, adapters, checkpoints and exports, and training from local
folders without Prefect or S3 (``folder_training``). ``TrainResult`` lives with the other records.

May import: the foundations (models, identifiers, records, storage, leases, layout, images). Importing this
package loads neither torch nor diffusers; they are imported when training starts.
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
