"""The one typed settings object.

Each setting is declared once below: type, default, meaning. Values come from
`ALPR_<NAME>` environment variables, else from the TOML file named by
`ALPR_CONFIG` (keys are the lower-case names), else the default. An unknown key
or an unknown `ALPR_` variable is an error, so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

ENV_PREFIX = "ALPR_"
CONFIG_ENV = "ALPR_CONFIG"
MIN_RETENTION_DAYS = 365  # Government Code 34090.6 via both policies: at least one year.


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    # --- Kafka
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers, host:port[,host:port]; unset means the dev broker on broker_port.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT only for loopback dev; production uses SSL or SASL_SSL.")
    kafka_sasl_username: str | None = Field(None, description="SASL/SCRAM user when kafka_security_protocol=SASL_SSL.")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL/SCRAM password; from the environment only.")
    kafka_replication_factor: int | None = Field(
        None, ge=1, description="Overrides every topic's replication factor (the dev broker has one node: 1).")
    schema_registry_url: str | None = Field(
        None, description="Confluent-compatible schema registry; unset means Avro single-object encoding.")

    # --- ClickHouse
    clickhouse_url: str | None = Field(
        None, description="ClickHouse server HTTP(S) URL; unset means embedded chDB under data_dir.")
    clickhouse_user: str = Field("default", description="ClickHouse server user.")
    clickhouse_password: SecretStr | None = Field(None, description="ClickHouse server password.")
    clickhouse_database: str = Field("alpr", pattern=r"^[a-z_][a-z0-9_]*$", description="Database holding all tables.")

    # --- Embedded stack
    data_dir: Path = Field(Path(".alpr"), description="State of the embedded stack: chDB store, pid files, logs.")
    broker_port: int = Field(19092, ge=1, le=65535, description="Port of the dev broker that `alpr stack up` starts.")
    bind_host: str = Field("127.0.0.1", description="Address local listeners bind; loopback unless set.")

    # --- Policy
    retention_days: int = Field(MIN_RETENTION_DAYS, description="Days reads are kept before purge (never below 365).")
    agency: str = Field("RIC", min_length=1, description="Agency code of this installation (the regional center).")

    # --- Logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Minimum log level.")
    log_format: Literal["text", "json"] = Field("text", description="text for people, json for collectors.")

    @field_validator("retention_days")
    @classmethod
    def _at_least_one_year(cls, value: int) -> int:
        if value < MIN_RETENTION_DAYS:
            raise ValueError(f"must be at least {MIN_RETENTION_DAYS} days (reads are kept at least one year)")
        return value

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _default_bootstrap(self) -> "Settings":
        if self.kafka_bootstrap is None:
            self.kafka_bootstrap = f"127.0.0.1:{self.broker_port}"
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Precedence: explicit arguments, then environment, then the TOML file.
        return (init_settings, env_settings, _toml_source)


def _toml_source() -> dict:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{CONFIG_ENV}={path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_ENV}={path}: not valid TOML ({exc})") from None


def _unknown_env() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {CONFIG_ENV}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


def load_settings(**overrides) -> Settings:
    """Build and validate the settings; any problem is one ConfigError naming the setting."""
    unknown = _unknown_env()
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (see `alpr config` for the list)")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "?"
        where = f"{ENV_PREFIX}{name.upper()}"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting {name!r} in {os.environ.get(CONFIG_ENV, 'configuration')}") from None
        raise ConfigError(f"setting {where}: {err['msg']} (got {err.get('input')!r})") from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()


def describe() -> list[tuple[str, str, str, str]]:
    """(env var, type, default, meaning) for every setting: what `alpr config` prints."""
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append((ENV_PREFIX + name.upper(), str(field.annotation).replace("typing.", ""),
                     repr(field.default), field.description or ""))
    return rows
