"""`OpenAICompatServer`: the loopback HTTP server, the OpenAI and fine-tuning routes and the faults, composed.

The server owns the state the routes use (responder, models, files, jobs), the route table (`ROUTES`, plus
`FINE_TUNING_ROUTES` with ``fine_tuning=...``, plus what `add_route` adds) and the request log. Each
request goes through `_respond`: it is counted (the server stops after `max_requests`), matched to a route,
given a fault (scripted, else drawn from the `FaultPlan`), recorded, delayed by `latency`, checked (404,
401 on a wrong API key, 400 on a POST body that is not a JSON object), and then faulted or routed.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

from honing.testing.server.faults import FaultPlan, check_kind, fault_reply, garbage_text, truncate
from honing.testing.server.finetuning import FINE_TUNING_ROUTES, FineTuneScript
from honing.testing.server.httpserver import LoopbackHTTPServer, RequestHandler
from honing.testing.server.messages import RecordedRequest, Reply, error_reply
from honing.testing.server.openai_routes import FAULTABLE_PATHS, ROUTES, default_responder

RouteHandler = Callable[["OpenAICompatServer", RecordedRequest], Reply]


class OpenAICompatServer:
    """A loopback OpenAI-compatible server (see the `honing.testing.server` package docstring). Use it as
    a context manager.

    - `responder(request_json) -> str`: the reply text for chat and completions requests.
    - `latency`: seconds every request waits before it is answered.
    - `faults`: a `FaultPlan`; `script([...])` overrides it for the next requests.
    - `api_key`: when set, requests whose ``Authorization`` is not ``Bearer <api_key>`` get a 401 (whose
      message repeats the key received when `leak_key_in_errors`, like some real providers do, so
      clients' scrubbing can be tested).
    - `timeout_sleep`: how long a ``"timeout"`` fault waits; `retry_after`: the ``Retry-After`` value
      (seconds, or a string sent as is, e.g. an HTTP date).
    - `max_lifetime`, `max_requests`: the server stops by itself after either.
    - `fine_tuning`: True (or a `FineTuneScript` saying how jobs progress) serves the files and
      fine-tuning routes (`FINE_TUNING_ROUTES`); by default jobs succeed on their third retrieval.
      `fine_tune_script` may be replaced later; it applies to jobs created after that.
    """

    def __init__(
        self,
        responder: Callable[[dict[str, Any]], str] | None = None,
        *,
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        leak_key_in_errors: bool = True,
        timeout_sleep: float = 5.0,
        retry_after: float | str = 1,
        max_lifetime: float = 600.0,
        max_requests: int = 100_000,
        models: Sequence[str] = ("test-model",),
        routes: dict[tuple[str, str], RouteHandler] | None = None,
        faultable_paths: Iterable[str] = FAULTABLE_PATHS,
        fine_tuning: bool | FineTuneScript = False,
    ) -> None:
        self.responder = responder or default_responder
        self.latency = float(latency)
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.leak_key_in_errors = leak_key_in_errors
        self.timeout_sleep = float(timeout_sleep)
        self.retry_after = retry_after
        self.max_lifetime = float(max_lifetime)
        self.max_requests = int(max_requests)
        self.models = list(models)
        self.routes: dict[tuple[str, str], RouteHandler] = {
            **ROUTES, **(FINE_TUNING_ROUTES if fine_tuning else {}), **(routes or {})}
        self.faultable_paths = set(faultable_paths)
        #: how fine-tuning jobs created from now on progress (see `FineTuneScript`)
        self.fine_tune_script = fine_tuning if isinstance(fine_tuning, FineTuneScript) else FineTuneScript()
        #: uploaded files and fine-tuning jobs, by id
        self.files: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._count = 0
        self._script: list[str] = []
        self._rng = random.Random(self.faults.seed)
        self._garbage_rng = random.Random(self.faults.seed + 1)
        self._ids = 0
        self._http = LoopbackHTTPServer(self._respond)

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> OpenAICompatServer:
        self._http.start(self.max_lifetime)
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent, callable from any thread)."""
        self._http.stop()

    @property
    def running(self) -> bool:
        return self._http.running

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what an OpenAI client takes as its base URL."""
        return f"{self.base_url}/v1"

    # --- inspection and control ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        """How many requests reached the server (faulted ones included)."""
        with self._lock:
            return self._count

    def script(self, faults: Iterable[str]) -> None:
        """Use these fault kinds (``"ok"`` for none) for the next POST requests, then the `FaultPlan`."""
        kinds = [check_kind(k) for k in faults]
        with self._lock:
            self._script.extend(kinds)

    def set_faults(self, faults: FaultPlan) -> None:
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def reset(self) -> None:
        """Forget recorded requests and the count (the script and plan stay)."""
        with self._lock:
            self._requests.clear()
            self._count = 0

    def add_route(self, method: str, path: str, handler: RouteHandler, *, faultable: bool = False) -> None:
        """Serve `handler` at ``method path`` (for endpoints other tests need)."""
        self.routes[(method.upper(), path.rstrip("/"))] = handler
        if faultable:
            self.faultable_paths.add(path.rstrip("/"))

    def faultable(self, path: str) -> bool:
        return path in self.faultable_paths

    def match(self, method: str, path: str) -> tuple[RouteHandler | None, dict[str, str]]:
        """The handler of ``method path`` and the values of its ``{name}`` segments (exact paths win)."""
        route = self.routes.get((method, path))
        if route is not None:
            return route, {}
        for (m, template), handler in self.routes.items():
            if m != method or "{" not in template:
                continue
            pattern = re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(template))
            found = re.fullmatch(pattern, path)
            if found:
                return handler, found.groupdict()
        return None, {}

    # --- answering a request (called by the HTTP handler's thread) -----------------------------------

    def _respond(self, handler: RequestHandler, method: str, path: str, headers: dict[str, str],
                 body: Any) -> None:
        number = self._admit()
        if number is None:  # over max_requests: answer and let the server stop
            handler.send_reply(error_reply(503, "test server request limit reached"), close=True)
            return
        route, params = self.match(method, path)
        fault = "ok"
        if route is not None and method == "POST" and self.faultable(path):
            fault = self._next_fault()
        self._record(RecordedRequest(method, path, headers, body, time.time(), fault, params))
        if self.latency:
            self._http.stopped.wait(self.latency)
        if route is None:
            handler.send_reply(error_reply(404, f"no route {method} {path}", "invalid_request_error"))
            return
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            got = headers.get("authorization", "")
            shown = got.removeprefix("Bearer ") if self.leak_key_in_errors else "<redacted>"
            handler.send_reply(error_reply(401, f"Incorrect API key provided: {shown}",
                                           "invalid_request_error"))
            return
        if method == "POST" and not isinstance(body, dict):
            handler.send_reply(error_reply(400, "request body must be a JSON object",
                                           "invalid_request_error"))
            return
        if fault == "drop":
            handler.drop_connection()
            return
        if fault == "timeout":
            self._http.stopped.wait(self.timeout_sleep)
            fault = "ok"
        injected = fault_reply(fault, self.retry_after, self._garbage)
        if injected is not None:
            handler.send_reply(injected)
            return
        try:
            reply = route(self, RecordedRequest(method, path, headers, body, time.time(), fault, params))
        except Exception as exc:  # noqa: BLE001 - a responder bug becomes a 500 the test can see
            handler.send_reply(error_reply(500, f"responder failed: {type(exc).__name__}: {exc}"))
            return
        if fault == "truncated_json":
            reply = truncate(reply)
        handler.send_reply(reply)

    def _admit(self) -> int | None:
        with self._lock:
            self._count += 1
            number = self._count
        if number > self.max_requests:
            threading.Thread(target=self.stop, daemon=True).start()
            return None
        if number == self.max_requests:
            # answer this one, then stop (from another thread so this handler is not blocked)
            timer = threading.Timer(0.05, self.stop)
            timer.daemon = True
            timer.start()
        return number

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_fault(self) -> str:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            plan = self.faults
            if plan.rate > 0 and self._rng.random() < plan.rate:
                return self._rng.choice(plan.kinds)
            return "ok"

    # --- used by the routes --------------------------------------------------------------------------

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _garbage(self, n_words: int) -> str:
        with self._lock:
            return garbage_text(self._garbage_rng, n_words)

    def _reply_text(self, body: dict[str, Any], fault: str) -> str:
        if fault == "empty":
            return ""
        if fault == "garbage":
            return self._garbage(12)
        return str(self.responder(body))
