"""The threaded loopback HTTP plumbing under the test server, knowing nothing of OpenAI.

A `LoopbackHTTPServer` listens on 127.0.0.1 (port 0, so the OS picks a free one) in a daemon thread and
is bounded: it stops by itself `max_lifetime` seconds after it starts, so a test that forgets to stop it
cannot leave it running, and stopping it closes every open connection. Each request is read and parsed
(a JSON body, or a ``multipart/form-data`` one as a dict) by a `RequestHandler`, which passes it to the
server's `respond` callback; the callback answers with `RequestHandler.send_reply` or `drop_connection`.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from honing.testing.server.messages import Reply

#: ``respond(handler, method, path, headers, body)``: answers one request through `handler`. `path` has
#: no query string nor trailing slash, `headers` have lower-case names and `body` is parsed.
Respond = Callable[["RequestHandler", str, str, dict[str, str], Any], None]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default (5) drops connections when 16 client threads connect at once


class RequestHandler(BaseHTTPRequestHandler):
    """Reads one request, hands it to the server's `respond` callback, and sends what it answers."""

    protocol_version = "HTTP/1.1"
    server_version = "honing-test-server/1"
    timeout = 10  # idle keep-alive connections close after this
    # headers and body go out as two writes: without TCP_NODELAY every reply waits ~40 ms for the
    # client's delayed ACK on loopback, which made each call ~6x slower than the server's own work
    disable_nagle_algorithm = True

    loopback: LoopbackHTTPServer  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.loopback._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.loopback._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type") or ""
        if content_type.startswith("multipart/form-data"):
            body = _parse_multipart(content_type, raw)
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.loopback.respond(self, method, path, headers, body)

    def send_reply(self, reply: Reply, close: bool = False) -> None:
        """Send `reply` (JSON unless its headers say otherwise); `close` ends the connection after it."""
        data = reply.encode()
        try:
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out)
            self.close_connection = True

    def drop_connection(self) -> None:
        """Close the connection without answering."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any] | None:
    """A ``multipart/form-data`` body as a dict: text fields as str, file fields as
    ``{"filename": ..., "content": bytes}``. None when it does not parse."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    if not message.is_multipart():
        return None
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            fields[name] = {"filename": filename, "content": payload}
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields


class LoopbackHTTPServer:
    """Serves `respond` on 127.0.0.1 from `start` until `stop` (or `max_lifetime` seconds).

    `stopped` is set once it stops (and stays set); waits that should end when the server stops wait on
    it. `stop` is idempotent and callable from any thread.
    """

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Thread | None = None

    def start(self, max_lifetime: float) -> None:
        if self._httpd is not None:
            return
        handler = type("Handler", (RequestHandler,), {"loopback": self})
        httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="honing-test-server", daemon=True)
        self._thread.start()
        self._timer = threading.Thread(target=self._lifetime_watch, args=(max_lifetime,),
                                       name="honing-test-server-timer", daemon=True)
        self._timer.start()

    def _lifetime_watch(self, max_lifetime: float) -> None:
        if not self.stopped.wait(max_lifetime):
            self.stop()

    def stop(self) -> None:
        with self._lock:
            httpd, self._httpd = self._httpd, None
            self.stopped.set()
            conns = list(self._connections)
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._httpd is not None and not self.stopped.is_set()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return self._httpd.server_address[1]

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
