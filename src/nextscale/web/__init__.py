"""`nextscale serve`: a local page (and JSON API) to generate and edit images, scale by scale, with the model it
starts with or any built-in one."""

from .app import create_app
from .models import Models
from .server import serve
from .session import Session

__all__ = ["Models", "Session", "create_app", "serve"]
