"""medassist-client: the command-line tool (``medassist``) and Python client for the public HTTP API.

It talks to the server only over HTTP (``/api/v1/``) and imports nothing of the server's code, so it can
run on any machine with ``requests`` and ``tqdm``. ``api.Client`` is the Python interface; ``cli`` the
console script (``medassist --help``).
"""
from .api import ApiError, Client

__all__ = ["ApiError", "Client"]
