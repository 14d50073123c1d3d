"""What training and serving share: named architectures, corruptions, the checkpoint format, metrics."""

from models.architectures import MODEL_REGISTRY, create_model, list_models, register_model
from models.checkpoint import CheckpointError, ModelCard, load_checkpoint, save_checkpoint
from models.corruptions import NOISE_TYPES, corrupt, make_generator
from models.device import resolve_device
from models.metrics import mse_per_image, psnr_per_image, ssim_per_image

__all__ = [
    "MODEL_REGISTRY",
    "NOISE_TYPES",
    "CheckpointError",
    "ModelCard",
    "corrupt",
    "create_model",
    "list_models",
    "load_checkpoint",
    "make_generator",
    "mse_per_image",
    "psnr_per_image",
    "register_model",
    "resolve_device",
    "save_checkpoint",
    "ssim_per_image",
]
