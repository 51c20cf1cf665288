"""clipdiff_mini: the small, tested library behind the course on diffusion
models for image captioning. Modules are imported on demand; start with
`clipdiff_mini.config.get_config`."""
from clipdiff_mini.config import ConfigError, get_config

__version__ = "0.1.0"
__all__ = ["get_config", "ConfigError", "__version__"]
