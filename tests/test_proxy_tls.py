"""The SQL proxy over TLS, as deployed: a generated CA and certificate, clickhouse-connect verifying it.

The certificate comes from alpr.ops.devcert, the generator docker-compose's
`init-certs` runs, with the same names it is given there; the proxy is the real
ProxyService with ALPR_PROXY_TLS_CERT/KEY, over an embedded store with one read.
"""

from __future__ import annotations

import os
import stat
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import clickhouse_connect
import pytest
import yaml

from alpr.access.proxy import ProxyService
from alpr.core.errors import ConfigError
from alpr.core.migrations import migrate
from alpr.core.settings import load_settings
from alpr.core.store import EmbeddedStore
from alpr.ops import devcert
from alpr.schemas import Codec
from tests.people import PASSWORD, publish_user

ROOT = Path(__file__).parents[1]
CASE = {"SQL_case": "24-0107", "SQL_purpose": "stolen vehicle investigation"}


def _compose_devcert_args() -> list[str]:
    """init-certs' arguments in docker-compose.yml, after `python -m alpr.ops.devcert`."""
    entry = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["init-certs"]["entrypoint"]
    assert entry[:3] == ["python", "-m", "alpr.ops.devcert"]
    return entry[3:]


@pytest.fixture(scope="module")
def tls_proxy(broker, tmp_path_factory):
    certs = tmp_path_factory.mktemp("tls")
    args = _compose_devcert_args()
    assert devcert.main([str(certs), *args[1:]]) == 0  # compose's names (proxy, localhost, 127.0.0.1)
    data = tmp_path_factory.mktemp("proxy-tls")
    settings = load_settings(kafka_bootstrap=broker.bootstrap, data_dir=data, proxy_tls_cert=certs / "tls.crt",
                             proxy_tls_key=certs / "tls.key")
    codec = Codec()
    analyst = f"tls-analyst-{uuid.uuid4().hex[:6]}"
    publish_user(settings, codec, analyst)
    store = EmbeddedStore(data / "clickhouse", settings.clickhouse_database)
    migrate(store, settings)
    store.command(
        "INSERT INTO alpr.reads (read_id, camera_id, agency, plate, confidence, crop_jpeg, captured_at, read_at, "
        "lat, lon, model_version, frames_seen) VALUES ('t1', 'cam-1', 'SPD', '7TLS123', 0.97, 'J', "
        "'2026-11-20 10:00:00', '2026-11-20 10:00:01', 38.5, -121.4, 'm', 1)")
    proxy = ProxyService(settings, store, codec, writer=f"proxy-tls-{analyst}", port=0).start()
    yield {"proxy": proxy, "certs": certs, "analyst": analyst, "settings": settings}
    proxy.stop()
    store.close()


def _client(env, host: str = "localhost", **kw):
    return clickhouse_connect.get_client(host=host, port=env["proxy"].port, username=env["analyst"],
                                         password=PASSWORD, secure=True, **kw)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_clickhouse_connect_verifies_the_proxy_certificate_and_queries(tls_proxy, host) -> None:
    assert tls_proxy["proxy"].url.startswith("https://")
    client = _client(tls_proxy, host, verify=True, ca_cert=str(tls_proxy["certs"] / "ca.crt"), settings=CASE)
    try:
        rows = client.query("SELECT plate FROM reads WHERE plate = '7TLS123'").result_rows
    finally:
        client.close()
    assert rows == [("7TLS123",)]


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_proxy, tmp_path) -> None:
    """Verification is really on: the system CAs, or another dev CA, do not vouch for this proxy."""
    other = devcert.write_dev_certificate(tmp_path, ["localhost"], ["127.0.0.1"])
    for kw in ({"verify": True}, {"verify": True, "ca_cert": str(other.ca)}):
        with pytest.raises(Exception, match="(?i)certificate verify failed|SSL"):
            _client(tls_proxy, **kw)


def test_plain_http_gets_no_answer_from_the_tls_port(tls_proxy) -> None:
    with pytest.raises(Exception):
        clickhouse_connect.get_client(host="127.0.0.1", port=tls_proxy["proxy"].port, username=tls_proxy["analyst"],
                                      password=PASSWORD, secure=False, connect_timeout=5, send_receive_timeout=5)


def test_beyond_loopback_the_proxy_needs_the_certificate(tls_proxy) -> None:
    """As in compose and Kubernetes (ALPR_BIND_HOST=0.0.0.0): without TLS it refuses; with it, it is built."""
    exposed = tls_proxy["settings"].model_copy(update={"bind_host": "0.0.0.0"})
    ProxyService(exposed, tls_proxy["proxy"].store, tls_proxy["proxy"].codec, audit=tls_proxy["proxy"].audit,
                 directory=tls_proxy["proxy"].directory, port=0)
    with pytest.raises(ConfigError, match="ALPR_PROXY_TLS_CERT"):
        ProxyService(exposed.model_copy(update={"proxy_tls_cert": None, "proxy_tls_key": None}),
                     tls_proxy["proxy"].store, tls_proxy["proxy"].codec, audit=tls_proxy["proxy"].audit,
                     directory=tls_proxy["proxy"].directory, port=0)


def test_dev_certificate_names_key_mode_and_renewal(tmp_path) -> None:
    from cryptography import x509

    first = devcert.write_dev_certificate(tmp_path, ["proxy", "localhost"], ["127.0.0.1"])
    assert first.created and stat.S_IMODE(os.stat(first.key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"proxy", "localhost"}
    assert not (tmp_path / "ca.key").exists()  # the CA's key is never written
    # Restarting compose keeps a good certificate (clients' ca.crt stays valid) ...
    assert not devcert.write_dev_certificate(tmp_path, ["proxy"], ["127.0.0.1"]).created
    # ... and replaces one about to expire, or one that does not cover a new name.
    later = datetime.now(timezone.utc) + timedelta(days=devcert.VALID_DAYS) - devcert.RENEW_BEFORE / 2
    assert devcert.write_dev_certificate(tmp_path, ["proxy"], ["127.0.0.1"], now=later).created
    os.chmod(first.key, 0o644)
    renewed = devcert.write_dev_certificate(tmp_path, ["proxy", "proxy.alpr"], ["127.0.0.1"])
    assert renewed.created and stat.S_IMODE(os.stat(renewed.key).st_mode) == 0o600
    with pytest.raises(ConfigError):
        devcert.write_dev_certificate(tmp_path, [], ["not-an-ip"])
