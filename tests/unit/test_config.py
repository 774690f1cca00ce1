"""Config loading: env references, defaults, and errors that name the key."""

from pathlib import Path

import pytest

from seawall.config import ConfigError, load_settings, parse_settings


def test_default_settings_are_offline_local_models() -> None:
    s = load_settings(None)
    assert s.providers["local"].type == "local"
    assert s.models["local"].provider == "local"
    assert s.models["all-MiniLM-L6-v2"].kind == "embedding"
    assert s.auth.allow_anonymous_loopback is True


def test_env_references_are_expanded_with_defaults() -> None:
    s = parse_settings(
        {"providers": {"oa": {"type": "openai", "api_key": "${OA_KEY}",
                              "base_url": "${OA_URL:-http://127.0.0.1:1/v1}"}},
         "models": {"gpt-4o": {"provider": "oa"}}},
        env={"OA_KEY": "sk-secret"})
    assert s.providers["oa"].api_key == "sk-secret"
    assert s.providers["oa"].base_url == "http://127.0.0.1:1/v1"


def test_missing_env_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings({"providers": {"oa": {"type": "openai", "api_key": "${NOPE_KEY}"}}}, env={})
    assert "providers.oa.api_key: environment variable NOPE_KEY is not set" in str(e.value)


def test_unknown_provider_reference_names_the_model_key() -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings({"providers": {"local": {"type": "local"}},
                        "models": {"gpt-4o": {"provider": "openai"}}}, env={})
    msg = str(e.value)
    assert "models.gpt-4o.provider" in msg and "'openai'" in msg and "local" in msg


def test_typo_key_and_bad_type_are_reported_with_paths(tmp_path: Path) -> None:
    f = tmp_path / "seawall.yaml"
    f.write_text("server:\n  prot: 9000\n  port: not-a-number\nproviders:\n  x:\n    type: nope\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f)
    msg = str(e.value)
    assert "server.prot: unknown key" in msg
    assert "server.port:" in msg
    assert "providers.x: unknown provider type 'nope'" in msg
    assert str(f) in msg


def test_embedding_model_on_chat_provider_is_rejected() -> None:
    with pytest.raises(ConfigError, match="models.e.kind"):
        parse_settings({"providers": {"l": {"type": "local"}},
                        "models": {"e": {"provider": "l", "kind": "embedding"}}}, env={})


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def _models(models: dict[str, object]) -> dict[str, object]:
    return {"providers": {"a": {"type": "fake"}, "e": {"type": "embedder"}}, "models": models}


@pytest.mark.parametrize("models,expected", [
    ({"m": {"provider": "a", "deployments": [{"provider": "a"}]}},
     "models.m: Value error, give either provider"),
    ({"m": {}}, "needs provider (one deployment) or a non-empty deployments list"),
    ({"m": {"deployments": [{"provider": "nope"}]}},
     "models.m.deployments.0.provider: no provider named 'nope'"),
    ({"m": {"provider": "a", "fallbacks": ["m"]}},
     "models.m.fallbacks.0: 'm' is not another model"),
    ({"m": {"provider": "a", "fallbacks": ["emb"]}, "emb": {"provider": "e", "kind": "embedding"}},
     "models.m.fallbacks.0: 'emb' is a embedding model, not chat"),
    ({"m": {"deployments": [{"provider": "a", "hedge": True}]}},
     "models.m.deployments.0.hedge: hedging needs another deployment"),
    ({"m": {"provider": "a", "degraded": {"rules": [{"match": "(", "answer": "x"}]}}},
     "not a valid regular expression"),
    ({"m": {"provider": "a", "strategy": "fastest"}}, "models.m.strategy"),
])
def test_model_resilience_settings_are_checked(models: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(_models(models), env={})
    assert expected.replace("Value error, ", "") in str(e.value)


def test_deployment_timeouts_inherit_the_defaults() -> None:
    s = parse_settings({**_models({"m": {"deployments": [
        {"provider": "a", "timeouts": {"idle_s": 2}}, {"provider": "a", "weight": 3}]}}),
        "resilience": {"timeouts": {"first_token_s": 9}}}, env={})
    first = s.models["m"].deployments[0].timeouts.over(s.resilience.timeouts)
    assert (first.idle_s, first.first_token_s, first.total_s) == (2, 9, 600)
    assert s.models["m"].deployments[1].weight == 3


def test_a_relative_data_dir_is_relative_to_the_config_file_not_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "proj" / "seawall.yaml"
    conf.parent.mkdir()
    conf.write_text("data_dir: state\nrag: {path: other/rag.db}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    s = load_settings(conf, env={"SEAWALL_HOME": str(tmp_path / "home")})
    assert Path(s.data_dir) == conf.parent / "state"  # an explicit data_dir beats SEAWALL_HOME
    assert s.db_path == conf.parent / "state" / "seawall.db"
    assert s.rag_path == conf.parent / "other" / "rag.db"
    assert str(conf) in s.data_dir_origin


def test_without_data_dir_seawall_home_then_the_config_folder_then_the_cwd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf" / "seawall.yaml"
    conf.parent.mkdir()
    conf.write_text("auth: {allow_anonymous_loopback: true}\n")
    home = tmp_path / "home"
    assert Path(load_settings(conf, env={"SEAWALL_HOME": str(home)}).data_dir) == home
    assert Path(load_settings(None, env={"SEAWALL_HOME": str(home)}).data_dir) == home
    beside = load_settings(conf, env={})
    assert Path(beside.data_dir) == conf.parent / ".seawall"
    bare = load_settings(None, env={})
    assert Path(bare.data_dir) == tmp_path / ".seawall"
    assert "working directory" in bare.data_dir_origin and "SEAWALL_HOME" in bare.data_dir_origin
