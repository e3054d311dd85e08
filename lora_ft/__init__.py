"""lora-ft: LoRA fine-tuning of a pretrained transformer for text classification, offline by default."""

from .config import Config
from .errors import ConfigError, DataError, LoraFtError

__all__ = ["Config", "ConfigError", "DataError", "LoraFtError"]
