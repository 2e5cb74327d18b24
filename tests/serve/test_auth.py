"""Where the API key comes from, and how it is compared."""

from __future__ import annotations

from pathlib import Path

import pytest

from posegpt.config import ConfigError
from serve.auth import key_matches, load_api_key, route_path, session_token, session_valid
from serve.settings import ServeConfig, config_from_args


def test_key_from_a_named_environment_variable_or_a_file(tmp_path: Path) -> None:
    assert load_api_key(ServeConfig(checkpoint="x"), {"POSEGPT_API_KEY": "k"}) is None
    cfg = ServeConfig(checkpoint="x", api_key_env="POSEGPT_API_KEY")
    assert load_api_key(cfg, {"POSEGPT_API_KEY": " k1 \n"}) == "k1"
    with pytest.raises(ValueError, match="POSEGPT_API_KEY"):
        load_api_key(cfg, {})
    secret = tmp_path / "key"
    secret.write_text("k2\n")
    assert load_api_key(ServeConfig(checkpoint="x", api_key_file=str(secret)), {}) == "k2"
    secret.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_api_key(ServeConfig(checkpoint="x", api_key_file=str(secret)), {})
    with pytest.raises(ValueError, match="does not exist"):
        load_api_key(ServeConfig(checkpoint="x", api_key_file=str(tmp_path / "missing")), {})


def test_config_names_one_source_only() -> None:
    with pytest.raises(ConfigError, match="not both"):
        config_from_args({"checkpoint": "x", "api_key_env": "K", "api_key_file": "/k"})


def test_bearer_header_must_match_exactly() -> None:
    assert key_matches("Bearer s3cret", "s3cret")
    assert key_matches("bearer s3cret", "s3cret")
    for header in (
        None,
        "",
        "s3cret",
        "Bearer",
        "Bearer s3cre",
        "Bearer s3cretx",
        "Basic s3cret",
        "Bearer S3CRET",
    ):
        assert not key_matches(header, "s3cret"), header


def test_route_path_strips_the_route_prefix() -> None:
    assert route_path({"path": "/app/healthz", "root_path": "/app"}) == "/healthz"
    assert route_path({"path": "/healthz", "root_path": ""}) == "/healthz"
    assert route_path({"path": "/app", "root_path": "/app"}) == "/"


def test_session_cookie_is_signed_with_the_key_and_expires() -> None:
    token = session_token("k1", now=1000.0, ttl_s=60)
    assert session_valid(token, "k1", now=1059.0)
    assert not session_valid(token, "k1", now=1061.0)  # expired
    assert not session_valid(token, "k2", now=1000.0)  # another key: every session ends
    expiry, mac = token.split(".")
    assert "k1" not in token
    assert not session_valid(f"{int(expiry) + 3600}.{mac}", "k1", now=1000.0)  # a longer expiry is not signed
    for bad in (None, "", "x", "1.2.3", f"{expiry}.", f".{mac}", f"-5.{mac}"):
        assert not session_valid(bad, "k1", now=1000.0), bad
