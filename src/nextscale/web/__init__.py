"""`nextscale serve`: a local page (and JSON API) to generate and edit images with one model, scale by scale."""

from .app import create_app
from .server import serve
from .session import Session

__all__ = ["Session", "create_app", "serve"]
