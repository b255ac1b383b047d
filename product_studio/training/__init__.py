"""DreamBooth LoRA training: the trainer (``loop``), its data, conditioning, checkpoints, exports, presets.

Importing this package loads neither torch nor diffusers; they are imported when training starts.
"""

from product_studio.training.checkpoints import Checkpoints
from product_studio.training.data import PhotoError, TrainingImage, from_cutout, load_photo_folder
from product_studio.training.export import KOHYA_FILE, LORA_FILE, read_metadata
from product_studio.training.loop import ADAPTER, TrainingError, TrainResult, train_lora
from product_studio.training.presets import PRESETS

__all__ = [
    "ADAPTER",
    "KOHYA_FILE",
    "LORA_FILE",
    "PRESETS",
    "Checkpoints",
    "PhotoError",
    "TrainResult",
    "TrainingError",
    "TrainingImage",
    "from_cutout",
    "load_photo_folder",
    "read_metadata",
    "train_lora",
]
