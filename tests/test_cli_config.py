"""Bad configuration gives one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alpr.ops.broker import free_port
from tests.conftest import alpr_env

ALPR = [sys.executable, "-m", "alpr.cli"]


def run_alpr(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*ALPR, *args], env=alpr_env(**(env or {})), capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).parents[1])


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alpr: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_setting(tmp_path) -> None:
    assert_one_line_error(run_alpr("config", env={"ALPR_KAFKA_BOOTSRAP": "x"}), "ALPR_KAFKA_BOOTSRAP")


def test_unknown_key_in_config_file(tmp_path) -> None:
    cfg = tmp_path / "alpr.toml"
    cfg.write_text('retention_dayz = 400\n')
    assert_one_line_error(run_alpr("config", env={"ALPR_CONFIG": str(cfg)}), "retention_dayz")


def test_retention_below_one_year_refused() -> None:
    assert_one_line_error(run_alpr("config", env={"ALPR_RETENTION_DAYS": "364"}), "ALPR_RETENTION_DAYS", "365")


def test_config_file_values_apply_and_env_wins(tmp_path) -> None:
    cfg = tmp_path / "alpr.toml"
    cfg.write_text('retention_days = 400\nagency = "XYZ"\n')
    from alpr.core.settings import load_settings

    os.environ["ALPR_CONFIG"] = str(cfg)
    os.environ["ALPR_AGENCY"] = "ENV"
    try:
        s = load_settings()
    finally:
        del os.environ["ALPR_CONFIG"], os.environ["ALPR_AGENCY"]
    assert (s.retention_days, s.agency) == (400, "ENV")


def test_port_taken(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_alpr("stack", "up", env={"ALPR_BROKER_PORT": str(port), "ALPR_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "port", str(port), "ALPR_BROKER_PORT")


def test_broker_unreachable() -> None:
    result = run_alpr("topics", "apply", env={"ALPR_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"})
    assert_one_line_error(result, "unreachable", "ALPR_KAFKA_BOOTSTRAP")


@pytest.mark.timeout(120)
def test_stack_up_status_down(tmp_path) -> None:
    env = {"ALPR_BROKER_PORT": str(free_port()), "ALPR_DATA_DIR": str(tmp_path)}
    up = run_alpr("stack", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        status = run_alpr("stack", "status", env=env).stdout
        assert "running" in status and f"127.0.0.1:{env['ALPR_BROKER_PORT']}" in status
        from alpr.core.migrations import available

        assert f"schema {available()[-1].version}" in status
        again = run_alpr("stack", "up", env=env)
        assert_one_line_error(again, "already up")
        # topics exist on the broker `up` started
        from alpr.core import kafka
        from alpr.core.settings import load_settings
        from alpr.core.topics import TOPICS

        s = load_settings(kafka_bootstrap=f"127.0.0.1:{env['ALPR_BROKER_PORT']}")
        assert set(TOPICS) <= set(kafka.admin(s).list_topics(timeout=10).topics)
    finally:
        down = run_alpr("stack", "down", env=env)
    assert down.returncode == 0 and "broker" in down.stdout
    assert "running" not in run_alpr("stack", "status", env=env).stdout


@pytest.fixture
def scrubbed_env(monkeypatch):
    """No ALPR_ variable from the caller's shell leaks into a settings test."""
    for key in [k for k in os.environ if k.startswith("ALPR_")]:
        monkeypatch.delenv(key)
    return monkeypatch


def test_settings_that_only_make_sense_together_are_given_together(scrubbed_env, tmp_path) -> None:
    from alpr.core.errors import ConfigError
    from alpr.core.settings import load_settings

    with pytest.raises(ConfigError, match="proxy_tls_cert and proxy_tls_key"):
        load_settings(proxy_tls_cert=tmp_path / "cert.pem")
    with pytest.raises(ConfigError, match="SASL_SSL needs kafka_sasl_username and kafka_sasl_password"):
        load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc")
    with pytest.raises(ConfigError, match="only with kafka_security_protocol=SASL_SSL"):
        load_settings(kafka_sasl_username="svc", kafka_sasl_password="pw")
    ok = load_settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc", kafka_sasl_password="pw",
                       proxy_tls_cert=tmp_path / "c.pem", proxy_tls_key=tmp_path / "k.pem")
    assert ok.kafka_sasl_password.get_secret_value() == "pw"


def test_secrets_come_from_the_environment_only(scrubbed_env, tmp_path) -> None:
    from alpr.core.errors import ConfigError
    from alpr.core.settings import load_settings

    cfg = tmp_path / "alpr.toml"
    cfg.write_text('clickhouse_url = "https://ch:8443"\nclickhouse_password = "in-a-file"\n')
    scrubbed_env.setenv("ALPR_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="clickhouse_password is a secret and comes from the environment only"):
        load_settings()
    cfg.write_text('clickhouse_url = "https://ch:8443"\n')
    scrubbed_env.setenv("ALPR_CLICKHOUSE_PASSWORD", "from-env")
    assert load_settings().clickhouse_password.get_secret_value() == "from-env"


def test_trt_cache_is_a_setting_the_tensorrt_backend_reads(scrubbed_env, tmp_path) -> None:
    """ALPR_TRT_CACHE is declared once; `alpr config` lists it and the backend's default comes from it."""
    import inspect

    from alpr.core.settings import describe, load_settings
    from alpr.gpu import tensorrt_engine

    scrubbed_env.setenv("ALPR_TRT_CACHE", str(tmp_path / "engines"))
    assert load_settings().trt_cache == tmp_path / "engines"
    assert "ALPR_TRT_CACHE" in {row[0] for row in describe()}
    assert "settings().trt_cache" in inspect.getsource(tensorrt_engine.TensorRTBackend.__init__)


def test_session_timeout_is_short_only_on_the_dev_broker(scrubbed_env) -> None:
    """The dev broker answers a group join after about half the session timeout (start-up time);
    Apache Kafka refuses less than 6 s by default, so a configured cluster keeps 6000."""
    from alpr.core.kafka import consumer_config
    from alpr.core.settings import load_settings

    dev, cluster = load_settings(), load_settings(kafka_bootstrap="kafka-1:9092")
    assert (dev.kafka_session_timeout_ms, cluster.kafka_session_timeout_ms) == (3000, 6000)
    assert load_settings(kafka_bootstrap="kafka-1:9092", kafka_session_timeout_ms=10000).kafka_session_timeout_ms == 10000
    config = consumer_config(dev, "g", "c")
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (3000, 750)


def test_malformed_toml_is_one_line(tmp_path) -> None:
    cfg = tmp_path / "alpr.toml"
    cfg.write_text('retention_days = = 400\n')
    assert_one_line_error(run_alpr("config", env={"ALPR_CONFIG": str(cfg)}), "not valid TOML")


# --- first contact: what a new user sees before anything runs

def test_before_stack_up_commands_say_to_run_it(tmp_path) -> None:
    dead = str(free_port())
    result = run_alpr("hotlist", "list", "--user", "someone", env={"ALPR_BROKER_PORT": dead,
                                                                   "ALPR_DATA_DIR": str(tmp_path)})
    assert_one_line_error(result, "alpr stack up")
    assert "ALPR_KAFKA_BOOTSTRAP" in result.stderr  # and how to point at a real cluster instead


def test_stack_status_tells_stopped_from_running(tmp_path, broker) -> None:
    stopped = run_alpr("stack", "status", env={"ALPR_BROKER_PORT": str(free_port()), "ALPR_DATA_DIR": str(tmp_path)})
    assert stopped.returncode == 0
    kafka_line = next(line for line in stopped.stdout.splitlines() if line.startswith("kafka"))
    assert " stopped " in kafka_line and "alpr stack up" in kafka_line
    running = run_alpr("stack", "status", env={"ALPR_KAFKA_BOOTSTRAP": broker.bootstrap,
                                               "ALPR_DATA_DIR": str(tmp_path)})
    kafka_line = next(line for line in running.stdout.splitlines() if line.startswith("kafka"))
    assert " running " in kafka_line


def test_camera_pointed_at_a_missing_folder_fails_at_once(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, needle in ((str(tmp_path / "nope"), "no such file or folder"), (str(empty), "has no images")):
        result = run_alpr("camera", "--camera-id", "c1", "--agency", "SPD", "--source", source, "--lat", "38.5",
                          "--lon", "-121.5", env={"ALPR_BROKER_PORT": str(free_port())}, timeout=20)
        assert_one_line_error(result, "--source", needle)


def test_one_off_commands_keep_info_logs_out_unless_asked(tmp_path) -> None:
    """`alpr stack status` logs nothing at INFO by default; -v shows it."""
    env = {"ALPR_BROKER_PORT": str(free_port()), "ALPR_DATA_DIR": str(tmp_path)}
    quiet = run_alpr("stack", "status", env=env)
    assert quiet.stderr == ""
    loud = run_alpr("-v", "migrate", env=env)
    assert loud.returncode == 0 and "INFO" in loud.stderr


def test_config_prints_a_table_a_person_reads(tmp_path) -> None:
    result = run_alpr("config", env={"ALPR_RETENTION_DAYS": "400", "ALPR_CLICKHOUSE_PASSWORD": "pw"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("ALPR_RETENTION_DAYS")))
    assert lines[at].split() == ["ALPR_RETENTION_DAYS", "integer"]
    assert lines[at + 1].split() == ["now:", "400", "default:", "365"]
    assert "pw" not in result.stdout  # secrets are never printed
    secret = next(i for i, line in enumerate(lines) if line.startswith("ALPR_CLICKHOUSE_PASSWORD"))
    assert "(secret)" in lines[secret + 1]


def test_hotlist_import_of_latin1_or_a_jpeg_is_one_line(tmp_path) -> None:
    from alpr.alerting.hotlist import diff_csv
    from alpr.core.errors import BadInput

    latin1 = tmp_path / "extract.csv"
    latin1.write_bytes(b"plate,state,reason,source,case_number,expires\n"
                       b"7ABC123,CA,STOLEN_VEHICLE,CA,26-1,2027-01-01\nJOS\xe9,CA,WARRANT,CA,26-2,2027-01-01\n")
    jpeg = tmp_path / "photo.csv"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)))
    for path in (latin1, jpeg):
        with pytest.raises(BadInput, match="not UTF-8 text.*nothing imported"):
            diff_csv(path, "CA", {}, agency="SPD", user="u")
