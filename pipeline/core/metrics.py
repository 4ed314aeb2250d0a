"""Every Prometheus metric the pipeline exposes, declared once, and the HTTP endpoint that serves them.

Each long-running process (camera, worker, alerts, warehouse, proxy) serves
`/metrics` (Prometheus text format), `/healthz` (liveness: the main loop turned
recently) and `/readyz` (readiness: the process says it is consuming and able to
publish) on `metrics_port` (0 picks a free port; the heartbeat carries the URL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from alpr.core.logs import get_log

log = get_log(__name__)
REGISTRY = CollectorRegistry(auto_describe=True)

# --- cameras
FRAMES_SENT = Counter("alpr_camera_frames_sent", "Frames published to the frames topic.", ["camera"],
                      registry=REGISTRY)
FRAMES_DROPPED = Counter("alpr_camera_frames_dropped", "Frames lost at the camera (corrupt, not encodable).",
                         ["camera", "reason"], registry=REGISTRY)
SOURCE_RECONNECTS = Counter("alpr_camera_reconnects", "Times a source failed and was retried.", ["camera"],
                            registry=REGISTRY)
# --- recognition workers
WORKER_FRAMES = Counter("alpr_worker_frames", "Frames consumed by the worker, by outcome.", ["outcome"],
                        registry=REGISTRY)
READS_PUBLISHED = Counter("alpr_reads", "Plate reads published.", ["camera"], registry=REGISTRY)
READS_FOLDED = Counter("alpr_reads_folded", "Reads folded into an earlier read of the same car.", registry=REGISTRY)
INFERENCE_SECONDS = Histogram("alpr_inference_seconds", "Reader time per batch.", ["backend", "batch_size"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
# --- every consumer
CONSUMER_LAG = Gauge("alpr_consumer_lag", "Records behind the true end of the partition (committed offsets).",
                     ["group", "topic", "partition"], registry=REGISTRY)
DEAD_LETTERS = Counter("alpr_dead_letters", "Records sent to the dead-letter topic.", ["consumer", "topic"],
                       registry=REGISTRY)
# --- alerts
ALERTS_RAISED = Counter("alpr_alerts", "Alerts raised, by match kind.", ["kind"], registry=REGISTRY)
ALERT_READS = Counter("alpr_alert_reads", "Reads consumed by the alert topology, by outcome "
                      "(checked, dead_lettered): activity shows before any plate matches.", ["outcome"],
                      registry=REGISTRY)
ALERTS_SUPPRESSED = Counter("alpr_alerts_suppressed", "Alerts not raised again: same alert id, or the same "
                            "plate, camera and match inside the de-duplication window.", ["why"], registry=REGISTRY)
# --- warehouse
SINK_ROWS = Counter("alpr_sink_rows", "Rows inserted into ClickHouse.", ["table"], registry=REGISTRY)
SINK_INSERT_SECONDS = Histogram("alpr_sink_insert_seconds", "ClickHouse insert time per batch.", ["table"],
                                registry=REGISTRY)
# --- proxy and audit
PROXY_QUERIES = Counter("alpr_proxy_queries", "Analyst queries, by decision.", ["outcome"], registry=REGISTRY)
AUDIT_WRITE_SECONDS = Histogram("alpr_audit_write_seconds", "Time to get an audit event acknowledged.",
                                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
                                registry=REGISTRY)


class Health:
    """What /healthz and /readyz answer: the main loop calls `beat()`, the process sets `ready`."""

    def __init__(self, liveness_timeout: float = 30.0) -> None:
        self.liveness_timeout = liveness_timeout
        self._last_beat = time.monotonic()
        self._ready: Callable[[], bool] = lambda: False

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def set_ready_check(self, check: Callable[[], bool]) -> None:
        self._ready = check

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.liveness_timeout

    @property
    def ready(self) -> bool:
        try:
            return self.alive and bool(self._ready())
        except Exception as exc:  # a failing readiness check means not ready, and says why
            log.warning("readiness.check_failed", error=str(exc))
            return False


class MetricsServer:
    """/metrics, /healthz, /readyz on a daemon thread."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        health_ref = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.startswith("/metrics"):
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok = health_ref.alive
                    self._send(200 if ok else 503, b"ok\n" if ok else b"main loop stalled\n")
                elif self.path == "/readyz":
                    ok = health_ref.ready
                    self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds would flood the log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
