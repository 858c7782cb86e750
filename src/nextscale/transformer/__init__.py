from .layers import KVCache
from .var import VAR, VARConfig

__all__ = ["KVCache", "VAR", "VARConfig"]
