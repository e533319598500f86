"""ligo_ds: grow pretrained causal LMs with a learned linear operator (LiGO), at cluster scale."""

from .errors import ConfigError

__version__ = "0.1.0"
__all__ = ["ConfigError", "Decoder", "ModelConfig", "load_config", "load_model", "save_model", "__version__"]

# The model API imports torch; importing the package does not, so that light processes (prepare's
# tokenizing workers, `--help`) stay light. `from ligo_ds import load_model` works as before.
_LAZY = {
    "Decoder": "model.decoder",
    "ModelConfig": "model.config",
    "load_model": "api",  # as the CLI's MODEL: local paths, Hub ids and run directories alike
    "load_config": "api",
    "save_model": "model.hf_save",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ligo_ds' has no attribute {name!r}")
