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

from alpr.core.errors import ConfigError

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

    # --- Alerting
    alert_dedup_seconds: float = Field(
        300.0, ge=0, description="The same plate at the same camera raises one alert per match in this many seconds.")
    partial_expiry_days: int = Field(
        30, ge=1, description="Days a partial-plate pattern stays active unless `alpr partial add --expires-days` says.")
    geofences_file: Path | None = Field(
        None, description="YAML of named polygons whose notice is added to alerts read inside them; unset: none.")
    alerts_stop_seconds: float = Field(
        15.0, gt=0, description="Seconds `alpr alerts` waits for a clean stop after SIGTERM before exiting hard.")

    # --- Warehouse
    sink_batch_rows: int = Field(
        5000, ge=1, le=100000, description="Most records the sink inserts into ClickHouse in one batch.")
    sink_batch_seconds: float = Field(
        1.0, gt=0, le=60, description="Longest a record waits in the sink before its batch is inserted.")
    sink_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause between retries while ClickHouse refuses inserts (backoff cap).")
    retention_run_at: str = Field(
        "03:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="UTC time of day (HH:MM) at which `alpr warehouse` enforces retention.")

    # --- Access
    proxy_port: int = Field(
        8124, ge=0, le=65535, description="Port of the gated SQL proxy (ClickHouse HTTP interface); 0 picks a free one.")
    proxy_tls_cert: Path | None = Field(
        None, description="PEM certificate for the proxy; required when bind_host is not loopback (no passwords in clear).")
    proxy_tls_key: Path | None = Field(None, description="PEM private key matching proxy_tls_cert.")
    proxy_max_result_rows: int = Field(
        500_000, ge=1, le=10_000_000, description="Most rows one proxied query may return (forced; larger results fail).")
    proxy_max_result_bytes: int = Field(
        268_435_456, ge=1024, description="Most bytes one proxied result may take (forced; the proxy buffers it).")
    proxy_max_execution_seconds: int = Field(
        60, ge=1, le=3600, description="Longest a proxied query may run before ClickHouse stops it.")
    proxy_auth_cache_seconds: int = Field(
        300, ge=0, le=3600,
        description="Seconds a verified password is remembered in memory (argon2 is slow by design); 0: verify every request.")
    training_valid_days: int = Field(
        730, ge=1, description="Days ALPR training stays valid before a refresher is due; older training means no access.")
    login_max_failures: int = Field(
        5, ge=1, le=100, description="Consecutive failed logins that lock an account.")
    login_lockout_minutes: int = Field(
        15, ge=1, description="Minutes a locked account stays locked.")
    release_export_dir: Path | None = Field(
        None, description="Where `alpr release export` writes packages; unset: data_dir/releases.")

    # --- operations
    metrics_port: int = Field(9100, ge=0, le=65535,
                              description="Port for /metrics, /healthz, /readyz on bind_host; 0 picks a free one.")
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60, description="How often a process reports to alpr.status.")
    shutdown_deadline_s: float = Field(
        20.0, gt=0, description="After SIGTERM, how long a process may finish its batch before it exits hard.")
    instance_id: str | None = Field(None, description="Name of this process in alpr status; default role@host:pid.")

    # --- Recognition
    plate_region: Literal["us", "na", "eu", "br", "any"] = Field(
        "us", description="Plate rules the reader applies (layouts, vanity plates, O as 0): us, na (US, Canada, "
        "Mexico), eu, br, any (eu + br).")

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
