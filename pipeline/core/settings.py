"""The one typed settings object.

Each setting is declared once below: type, default, meaning. Values come from
`ALPR_<NAME>` environment variables, else from the TOML file named by
`ALPR_CONFIG` (keys are the lower-case names; pydantic-settings' own TOML source),
else the default. An unknown key or an unknown `ALPR_` variable is an error, so a
typo never silently falls back to a default. Secrets (`SECRETS`) come from the
environment only: a config file is read by more people than a process's environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, TomlConfigSettingsSource

from alpr.core.errors import ConfigError

ENV_PREFIX = "ALPR_"
CONFIG_ENV = "ALPR_CONFIG"
MIN_RETENTION_DAYS = 365  # Government Code 34090.6 via both policies: at least one year.
# Settings that may only come from the environment (a Kubernetes Secret, a vault agent).
SECRETS = frozenset({"kafka_sasl_password", "clickhouse_password"})


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
    kafka_session_timeout_ms: int | None = Field(
        None, ge=1000, le=300000,
        description="Consumer-group session timeout: a dead member's partitions move after this long. Unset: "
                    "6000 (the least Apache Kafka accepts by default, group.min.session.timeout.ms), or 3000 "
                    "on the dev broker, which holds every group join for about half of it (start-up time).")
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
    alerts_fetch_wait_ms: int = Field(
        5, ge=1, le=1000, description="Longest the alert worker's fetch waits at the broker for new reads; "
                                      "part of read-to-alert latency on brokers that hold a fetch to its limit.")
    timezone: str = Field(
        "America/Los_Angeles", description="IANA time zone in which times are shown to people (alerts, entries); "
                                           "stored times stay UTC.")

    # --- Warehouse
    sink_batch_rows: int = Field(
        20000, ge=1, le=100000, description="Most records the sink inserts into ClickHouse in one batch.")
    sink_batch_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024,
        description="Most record bytes (Kafka values) the sink holds in one batch; bounds memory when reads carry images.")
    sink_batch_seconds: float = Field(
        1.0, gt=0, le=60, description="Longest a record waits in the sink before its batch is inserted.")
    sink_retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause between retries while ClickHouse refuses inserts (backoff cap).")
    retention_run_at: str = Field(
        "03:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="UTC time of day (HH:MM) at which `alpr warehouse` enforces retention.")
    retention_ttl_margin_days: int = Field(
        30, ge=2, le=365,
        description="Days the background TTL waits beyond retention (counted from when a row reached the store, "
                    "or its capture time if later) before its unaudited safety-net delete; the audited daily purge "
                    "always comes first.")
    warehouse_control_port: int = Field(
        0, ge=0, le=65535,
        description="Loopback port on which an embedded `alpr warehouse` serves custodial commands (enforce, "
                    "exports) with a token in data_dir; 0 picks a free one.")

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
    proxy_max_memory_bytes: int = Field(
        2_147_483_648, ge=16_777_216,
        description="Most memory one proxied query may use in ClickHouse (forced max_memory_usage; a bomb fails alone).")
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
    liveness_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="/healthz answers 503 when the main loop has not turned for this long.")
    shutdown_deadline_s: float = Field(
        20.0, gt=0, description="After SIGTERM, how long a process may finish its batch before it exits hard.")
    instance_id: str | None = Field(None, description="Name of this process in alpr status; default role@host:pid.")

    # --- Recognition
    plate_region: Literal["us", "na", "eu", "br", "any"] = Field(
        "us", description="Plate rules the reader applies (layouts, vanity plates, O as 0): us, na (US, Canada, "
        "Mexico), eu, br, any (eu + br).")

    # --- Recognition on GPUs
    trt_cache: Path = Field(
        Path.home() / ".cache" / "alpr" / "tensorrt",
        description="Folder of built TensorRT engines, keyed by model, GPU and TensorRT version; mount a volume "
                    "here so a pod does not rebuild them on every start.")

    # --- Recognition workers: batching (sized for the backend; the GPU deployment raises them)
    worker_batch_frames: int = Field(
        8, ge=1, le=1024,
        description="Most frames one worker batch gathers across its partitions (a GPU wants 32-128; a CPU core 8).")
    worker_batch_deadline_ms: float = Field(
        50.0, ge=0, le=5000,
        description="Longest a batch waits for more frames after its first one arrived (bounds added latency).")
    worker_decode_threads: int = Field(
        2, ge=1, le=64, description="Threads decoding JPEG frames while the batch fills (off the inference path).")
    worker_inference_threads: int = Field(
        1, ge=1, le=8,
        description="Batches read at once: 2 lets one batch's CPU stages overlap the next batch's GPU work.")

    # --- Logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Minimum log level.")
    log_format: Literal["text", "json"] = Field("text", description="text for people, json for collectors.")

    @field_validator("retention_days")
    @classmethod
    def _at_least_one_year(cls, value: int) -> int:
        if value < MIN_RETENTION_DAYS:
            raise ValueError(f"must be at least {MIN_RETENTION_DAYS} days (reads are kept at least one year)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone name such as America/Los_Angeles") from None
        return value

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _together(self) -> "Settings":
        """Settings that only make sense as a pair are given as a pair."""
        if (self.proxy_tls_cert is None) != (self.proxy_tls_key is None):
            raise ValueError("proxy_tls_cert and proxy_tls_key are set together (a certificate needs its key)")
        sasl = (self.kafka_sasl_username, self.kafka_sasl_password)
        if self.kafka_security_protocol == "SASL_SSL" and None in sasl:
            raise ValueError("kafka_security_protocol=SASL_SSL needs kafka_sasl_username and kafka_sasl_password")
        if self.kafka_security_protocol != "SASL_SSL" and sasl != (None, None):
            raise ValueError("kafka_sasl_username/password are used only with kafka_security_protocol=SASL_SSL")
        return self

    @model_validator(mode="after")
    def _default_bootstrap(self) -> "Settings":
        embedded = self.kafka_bootstrap is None
        if embedded:
            self.kafka_bootstrap = f"127.0.0.1:{self.broker_port}"
        if self.kafka_session_timeout_ms is None:
            self.kafka_session_timeout_ms = 3000 if embedded else 6000
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Precedence: explicit arguments, then environment, then the TOML file.
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return (init_settings, env_settings)
        if not Path(path).is_file():
            raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
        try:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=path)
        except ValueError as exc:  # tomllib.TOMLDecodeError
            raise ConfigError(f"{CONFIG_ENV}={path}: not valid TOML ({exc})") from None
        secrets = sorted(SECRETS & set(toml()))
        if secrets:
            raise ConfigError(f"{CONFIG_ENV}={path}: {secrets[0]} is a secret and comes from the environment only "
                              f"({ENV_PREFIX}{secrets[0].upper()}); remove it from the file")
        return (init_settings, env_settings, toml)


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
        if not err["loc"]:  # a model-level rule (settings given together)
            raise ConfigError(f"settings: {err['msg'].removeprefix('Value error, ')}") from None
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
        default = "(unset)" if field.default is None else str(field.default)
        rows.append((ENV_PREFIX + name.upper(), _type_name(field.annotation), default, field.description or ""))
    return rows


def _type_name(annotation: object) -> str:
    """A person's name for a setting's type: 'one of PLAINTEXT, SSL', 'path, optional', 'secret'."""
    import types
    import typing

    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return _type_name(inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]) + ", optional"
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(str, args))
    if annotation is SecretStr:
        return "secret (environment only)"
    return {str: "text", int: "integer", float: "number", bool: "true/false", Path: "path"}.get(annotation,
                                                                                                  str(annotation))
