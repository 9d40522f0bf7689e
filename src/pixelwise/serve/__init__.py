"""Serve a trained model over HTTP: a JSON/PNG API and a web page.

>>> from . import ServeConfig, create_app, serve
>>> serve("runs/demo", ServeConfig(port=8000, token="s3cret"))     # blocks; Ctrl-C stops it
>>> app = create_app("runs/demo")                                   # an ASGI app for any server
"""

from .app import ServeConfig, create_app
from .server import serve, serve_in_background

__all__ = ["ServeConfig", "create_app", "serve", "serve_in_background"]
