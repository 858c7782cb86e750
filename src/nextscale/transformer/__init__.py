from .layers import KVCache
from .raster import RasterAR, RasterConfig
from .var import VAR, VARConfig

__all__ = ["KVCache", "RasterAR", "RasterConfig", "VAR", "VARConfig"]
