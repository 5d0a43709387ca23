"""Where the ``medassist`` command finds its URL and token: flags, then env, then ~/.config/medassist.toml."""
from __future__ import annotations

import pytest

from medassist.client import cli
from medassist.client.config import DEFAULT_URL, load_settings


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("MEDASSIST_URL", "MEDASSIST_TOKEN", "MEDASSIST_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    (tmp_path / ".config").mkdir()
    return tmp_path / ".config" / "medassist.toml"


def test_the_file_then_the_environment_then_the_flags(home, monkeypatch):
    assert load_settings() == load_settings().__class__(DEFAULT_URL, None, "")
    home.write_text('url = "https://ma.example.org"\ntoken = "from-file"\n')
    assert (load_settings().url, load_settings().token) == ("https://ma.example.org", "from-file")
    monkeypatch.setenv("MEDASSIST_TOKEN", "from-env")
    monkeypatch.setenv("MEDASSIST_URL", "http://10.0.0.1:8000")
    assert (load_settings().url, load_settings().token) == ("http://10.0.0.1:8000", "from-env")
    flags = load_settings(url="http://flag", token="from-flag")
    assert (flags.url, flags.token, flags.source) == ("http://flag", "from-flag", "--token")


def test_a_broken_file_or_no_token_is_a_readable_usage_error(home, capsys):
    assert cli.main(["jobs"]) == 2
    assert "no API token: set MEDASSIST_TOKEN" in capsys.readouterr().err
    home.write_text("url = \n")
    assert cli.main(["jobs"]) == 2
    err = capsys.readouterr().err
    assert f"error: {home} is not valid TOML" in err and "Traceback" not in err
    home.write_text('url = "http://x"\ntokn = "typo"\n')
    assert cli.main(["jobs"]) == 2
    assert "unknown key(s) tokn (expected url, token)" in capsys.readouterr().err


def test_params_are_json_when_they_parse_and_strings_otherwise():
    assert cli.parse_param("top_k=5") == ("top_k", 5)
    assert cli.parse_param("embed=false") == ("embed", False)
    assert cli.parse_param('question=Does aspirin help?') == ("question", "Does aspirin help?")
    assert cli.parse_param("concept_types=[\"drug\"]") == ("concept_types", ["drug"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["submit", "f.jsonl", "--kind", "literature", "--param", "no-equals-sign"])
    assert exit_info.value.code == 2
