"""The embedded store, reached through the running `alpr warehouse` (custodial commands).

In embedded mode one process may open the chDB directory, and it is `alpr warehouse`.
So that `alpr retention enforce`, `alpr evidence export` and `alpr release export` work
while it runs (without stopping the sinks or the analysts' proxy), the warehouse serves
its store on a loopback-only HTTP endpoint (`ControlServer`), and those commands use it
through `RemoteStore`, the same `Store` interface they use against chDB or a server.
The commands run unchanged: they log their user in, check the role, write their audit
events and then run their statements through here.

Who may call it: whoever can read `data_dir/warehouse.control` (mode 0600: URL and a
random token, rewritten at every start, removed at stop). That is exactly who can read
the chDB files in the same directory, so the endpoint opens nothing that was not open
already; it only lets the commands run while the store is in use. It binds 127.0.0.1
whatever `bind_host` says, and compares the token in constant time.

Requests: POST /query?format=F with the statement as the body -> the result in format F;
POST /insert?table=T with an Arrow IPC stream as the body. A ClickHouse error comes back
as status 500 with ClickHouse's message, raised as StoreError on the calling side.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa

from alpr.core.errors import Unavailable
from alpr.core.logs import get_log
from alpr.core.settings import Settings
from alpr.core.store import Store, StoreError

log = get_log(__name__)
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*\Z")
_FORMAT = re.compile(r"^[A-Za-z]+\Z")
MAX_BODY = 256 * 1024 * 1024  # an Arrow batch of held_reads or holds is far smaller


def control_path(settings: Settings) -> Path:
    return settings.data_dir / "warehouse.control"


class ControlServer:
    """Serves the warehouse's store to local custodial commands (a Service of the warehouse)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings, self.store = settings, store
        self.token = secrets.token_urlsafe(32)
        self.requests = 0
        server_ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                given = self.headers.get("Authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {server_ref.token}".encode()):
                    log.warning("control.refused", client=self.client_address[0])
                    return self._send(403, b"token missing or wrong\n")
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._send(413, b"request too large\n")
                body = self.rfile.read(length)
                url = urllib.parse.urlsplit(self.path)
                args = dict(urllib.parse.parse_qsl(url.query))
                try:
                    if url.path == "/query":
                        fmt = args.get("format", "JSONEachRow")
                        if not _FORMAT.match(fmt):
                            return self._send(400, b"bad format\n")
                        sql = body.decode()
                        log.debug("control.query", statement=sql.split(None, 1)[0].upper() if sql.strip() else "")
                        result = server_ref.store.query_bytes(sql, fmt)
                    elif url.path == "/insert":
                        table = args.get("table", "")
                        if not _TABLE.match(table):
                            return self._send(400, b"bad table\n")
                        server_ref.store.insert_arrow(table, pa.ipc.open_stream(body).read_all())
                        result = b""
                    else:
                        return self._send(404, b"not found\n")
                except StoreError as exc:
                    return self._send(500, str(exc).encode())
                except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
                    return self._send(400, f"bad request body: {exc}".encode())
                server_ref.requests += 1
                self._send(200, result)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        # Loopback only, whatever bind_host says: this is for commands on this machine.
        self._server = ThreadingHTTPServer(("127.0.0.1", settings.warehouse_control_port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="warehouse-control", daemon=True)

    def start(self) -> None:
        path = control_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"url": self.url, "token": self.token, "pid": os.getpid()}, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        self._thread.start()
        log.info("control.listening", url=self.url)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        try:
            control_path(self.settings).unlink()
        except FileNotFoundError:
            pass
        log.info("control.stopped", requests=self.requests)


class RemoteStore(Store):
    """The running warehouse's embedded store, through its control endpoint."""

    def __init__(self, settings: Settings, timeout: float = 600.0) -> None:
        self.database = settings.clickhouse_database
        try:
            info = json.loads(control_path(settings).read_text())
            self._url, self._token = info["url"], info["token"]
        except (FileNotFoundError, ValueError, KeyError):
            raise Unavailable("the embedded store is in use by `alpr warehouse`, which serves no control endpoint "
                              f"({control_path(settings)} missing); restart it with this version") from None
        except PermissionError:
            raise Unavailable(f"{control_path(settings)} is not readable by this user: run the command as the "
                              "user that runs `alpr warehouse`") from None
        self._timeout = timeout  # a purge waits for its mutation: minutes on a large table

    def _post(self, path: str, body: bytes) -> bytes:
        req = urllib.request.Request(self._url + path, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {self._token}"})
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            if exc.code == 500:
                raise StoreError(text) from None
            raise Unavailable(f"the warehouse control endpoint refused the request ({exc.code}: {text.strip()})") \
                from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise Unavailable(f"the running `alpr warehouse` did not answer at {self._url} ({exc})") from None

    def query_bytes(self, sql: str, fmt: str = "JSONEachRow") -> bytes:
        return self._post(f"/query?format={urllib.parse.quote(fmt)}", sql.encode())

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        self._post(f"/insert?table={urllib.parse.quote(table)}", sink.getvalue().to_pybytes())
