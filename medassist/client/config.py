"""Where the client finds the API's URL and the user's token.

First the command line (``--url``, ``--token``), then the environment (``MEDASSIST_URL``,
``MEDASSIST_TOKEN``), then ``~/.config/medassist.toml`` (or ``$MEDASSIST_CONFIG``)::

    url = "https://medassist.example.org"
    token = "..."
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    url: str
    token: str | None
    source: str  # where the token came from, for error messages


def config_path() -> Path:
    if os.environ.get("MEDASSIST_CONFIG"):
        return Path(os.environ["MEDASSIST_CONFIG"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "medassist.toml"


def read_config_file(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"url", "token"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (expected url, token)")
    return data


def load_settings(*, url: str | None = None, token: str | None = None) -> Settings:
    path = config_path()
    file = read_config_file(path)
    chosen_url = url or os.environ.get("MEDASSIST_URL") or file.get("url") or DEFAULT_URL
    if token:
        return Settings(chosen_url, token, "--token")
    if os.environ.get("MEDASSIST_TOKEN"):
        return Settings(chosen_url, os.environ["MEDASSIST_TOKEN"], "MEDASSIST_TOKEN")
    return Settings(chosen_url, file.get("token"), str(path) if file.get("token") else "")
