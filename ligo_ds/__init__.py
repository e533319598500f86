"""ligo_ds: grow pretrained causal LMs with a learned linear operator (LiGO), at cluster scale."""

from .errors import ConfigError
from .hf_io import load_model, save_model
from .model import Decoder
from .model_config import ModelConfig

__version__ = "0.1.0"
__all__ = ["ConfigError", "Decoder", "ModelConfig", "load_model", "save_model", "__version__"]
