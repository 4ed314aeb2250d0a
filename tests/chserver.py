"""A stand-in for a ClickHouse server's HTTP interface, answered by chDB, that records every request.

No ClickHouse server can run here (see ../shared/ENGINEERING-NOTES.md), and chDB
does not serve HTTP. This is the smallest faithful bridge: each request the server
path (`ServerStore`, i.e. clickhouse-connect) sends is recorded exactly (method, URL
parameters, headers, body) and then executed by the ClickHouse engine inside chDB:

- a query (in the body or the `query` parameter) runs as is; a trailing
  `FORMAT X` becomes chDB's output format, so the bytes returned are ClickHouse's own;
- an INSERT whose data travels in the body (`INSERT INTO t (cols) FORMAT X` + bytes)
  is replayed as `INSERT INTO t (cols) FROM INFILE <body> FORMAT X`: the body is parsed
  by ClickHouse's own input format X against the table's columns, as a server parses an
  HTTP insert, so String->Enum conversion (and its refusal) is ClickHouse's own;
- every URL parameter that is not part of the HTTP protocol must be a setting the
  engine knows (a real server answers UNKNOWN_SETTING otherwise);
- errors go back as a server's do: status 500, `Code: N. DB::Exception: ...`.

What this cannot show (docs/clickhouse-server.md): authentication and users, HTTP
compression negotiated by the server, sessions, `X-ClickHouse-*` progress headers,
and anything a server's configuration changes.
"""

from __future__ import annotations

import gzip
import re
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# Parameters of the HTTP interface itself (ClickHouse docs, "HTTP Interface"), not settings.
PROTOCOL_PARAMS = {"query", "query_id", "session_id", "session_timeout", "session_check", "database", "user",
                   "password", "quota_key", "default_format", "compress", "decompress", "buffer_size",
                   "wait_end_of_query", "role", "client_protocol_version"}
_FORMAT_TAIL = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>\w+)\s*$", re.IGNORECASE | re.DOTALL)


@dataclass
class Request:
    method: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    sql: str = ""
    replayed_as: str = ""
    status: int = 0
    error: str = ""


@dataclass
class ChdbHttpServer:
    data_dir: Path
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        from chdb import session

        self._session = session.Session(str(self.data_dir))
        self._lock = threading.Lock()
        self._known_settings = {line for line in self._query("SELECT name FROM system.settings", "TSV")
                                .decode().splitlines()}
        self._spool = Path(tempfile.mkdtemp(prefix="chserver-"))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "ChdbHttpServer":
        threading.Thread(target=self._server.serve_forever, daemon=True, name="chserver").start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._session.close()

    def _query(self, sql: str, fmt: str) -> bytes:
        with self._lock:
            result = self._session.query(sql, fmt)
        return result.bytes() if result is not None else b""

    def answer(self, req: Request) -> tuple[int, bytes]:
        unknown = [p for p in req.params if p not in PROTOCOL_PARAMS and p not in self._known_settings
                   and not p.startswith("param_")]
        if unknown:
            return 500, f"Code: 115. DB::Exception: Setting {unknown[0]} is neither a builtin setting nor started " \
                        f"with the prefix 'SQL_' registered for user-defined settings. (UNKNOWN_SETTING)\n".encode()
        in_url = req.params.get("query", "")
        insert = _INSERT.match(in_url) if in_url and req.body else None
        try:
            if insert:  # the body is data in format `fmt`, read by ClickHouse's own input format
                req.sql = in_url
                path = self._spool / f"{len(self.requests)}.{insert['fmt']}"
                path.write_bytes(req.body)
                target = insert["target"]
                req.replayed_as = f"INSERT INTO {target} FROM INFILE '{path}' FORMAT {insert['fmt']}"
                return 200, self._query(req.replayed_as, "TSV")
            req.sql = "\n".join(p for p in (in_url, req.body.decode()) if p)
            fmt_match = _FORMAT_TAIL.search(req.sql)
            fmt = fmt_match.group(1) if fmt_match else req.params.get("default_format", "TabSeparated")
            req.replayed_as = _FORMAT_TAIL.sub("", req.sql)
            return 200, self._query(req.replayed_as, fmt)
        except RuntimeError as exc:  # chDB (ChdbError) carries the engine's exception text: a server's body is the same
            text = str(exc)
            code = re.search(r"Code: (\d+)", text)
            message = text if code else f"Code: 1001. DB::Exception: {text}"
            return 500, (message.strip() + "\n").encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                self._serve()

            def do_POST(self) -> None:  # noqa: N802
                self._serve()

            def _serve(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/ping":
                    return self._send(200, b"Ok.\n")
                body = self._read_body()
                req = Request(self.command, {k: v[-1] for k, v in parse_qs(url.query).items()},
                              dict(self.headers.items()), body)
                server.requests.append(req)
                req.status, out = server.answer(req)
                req.error = out.decode(errors="replace") if req.status != 200 else ""
                self._send(req.status, out)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    body = b"".join(chunks)
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = self.headers.get("Content-Encoding", "").lower()
                if encoding == "gzip":
                    return gzip.decompress(body)
                if encoding == "lz4":
                    import lz4.frame

                    return lz4.frame.decompress(body)
                if encoding == "zstd":
                    import zstandard

                    return zstandard.ZstdDecompressor().decompressobj().decompress(body)
                assert encoding in ("", "identity"), f"unhandled Content-Encoding {encoding}"
                return body

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "text/plain; charset=UTF-8" if status != 200
                                 else "application/octet-stream")
                if status != 200:
                    self.send_header("X-ClickHouse-Exception-Code", re.search(rb"Code: (\d+)", body).group(1).decode())
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        return Handler
