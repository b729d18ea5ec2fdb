"""A loopback OpenAI-compatible HTTP server for tests, with fault injection.

    with OpenAICompatServer(responder=lambda body: "hello", faults=FaultPlan(rate=0.2)) as srv:
        lm = LM("openai/test-model", api_base=srv.url, api_key="test")
        ...
        assert srv.count == 1

It listens on 127.0.0.1 (port 0, so the OS picks a free one) in a daemon thread, and is bounded: it stops
by itself after `max_lifetime` seconds and after `max_requests` requests, so a test that forgets to stop
it cannot leave it running.

Endpoints (see `ROUTES`, a table of ``(method, path) -> handler`` that subclasses or `add_route` extend):
``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings`` (deterministic, hash
based, dim 16) and ``GET /v1/models``; the files and fine-tuning APIs that ``litellm.create_file`` /
``create_fine_tuning_job`` / ``retrieve_fine_tuning_job`` use: ``POST /v1/files`` (multipart upload;
fine-tune files are checked line by line like OpenAI does), ``GET /v1/files/{file_id}``,
``GET /v1/files/{file_id}/content``, ``POST /v1/fine_tuning/jobs``, ``GET /v1/fine_tuning/jobs/{job_id}``
and ``POST /v1/fine_tuning/jobs/{job_id}/cancel`` (served with ``fine_tuning=True``, see
`FINE_TUNING_ROUTES`). A route path may hold ``{name}`` segments; their values
reach the handler as ``request.params``.

Fine-tuning jobs follow a script (`FineTuneScript`): each retrieval moves a job one status further
along ``statuses`` (the last one sticks), and a job that reaches ``"failed"`` carries ``error_message``.
Ids are derived from content (a file's id from its bytes, a job's from its request), so two identical
runs see identical ids and the fine-tuned model is ``ft:<model>:honing-test:<suffix>:<8 hex>``.

Faults (`FAULT_KINDS`), drawn at random by a `FaultPlan` or scripted for the next requests with
`srv.script([...])`, apply to the POST endpoints:

- ``"429"``, ``"500"``, ``"503"`` (and any other 3-digit status): an OpenAI-style JSON error;
- ``"429_retry_after"``: a 429 with a ``Retry-After`` header (`retry_after` seconds);
- ``"timeout"``: waits `timeout_sleep` seconds (longer than the client's timeout) before answering;
- ``"drop"``: closes the connection without a response;
- ``"truncated_json"``: a 200 whose body is the first half of the JSON;
- ``"empty"``: a well-formed reply whose content is ``""``;
- ``"garbage"``: a well-formed reply whose content is random text (for parser tests);
- ``"garbage_body"``: a 200 whose body is random non-JSON text;
- ``"ok"``: no fault (useful in scripts).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import attrs

#: The fault kinds a `FaultPlan` draws from by default.
FAULT_KINDS: tuple[str, ...] = (
    "429", "429_retry_after", "500", "503", "timeout", "drop", "truncated_json", "empty", "garbage",
)
_EXTRA_KINDS = ("ok", "garbage_body")

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")

EMBEDDING_DIM = 16


def _check_kind(kind: str) -> str:
    if kind in FAULT_KINDS or kind in _EXTRA_KINDS or (len(kind) == 3 and kind.isdigit()):
        return kind
    raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS + _EXTRA_KINDS)} "
                     "or a 3-digit HTTP status")


@attrs.frozen
class FaultPlan:
    """Inject a fault into each POST request with probability `rate`, picking uniformly from `kinds`.

    Draws come from `random.Random(seed)` in the order requests arrive, so a single-threaded test sees
    the same faults on every run.
    """

    rate: float = attrs.field(default=0.0, validator=attrs.validators.and_(attrs.validators.ge(0.0),
                                                                           attrs.validators.le(1.0)))
    kinds: tuple[str, ...] = attrs.field(default=FAULT_KINDS, converter=tuple)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if not self.kinds:
            raise ValueError("a FaultPlan needs at least one kind")
        for kind in self.kinds:
            _check_kind(kind)


@attrs.frozen
class RecordedRequest:
    """One request the server received: `headers` have lower-case names; `body` is the parsed JSON
    (None when the body was empty or not JSON); `fault` is the fault injected into it ("ok" if none)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    fault: str = "ok"
    #: values of the route's ``{name}`` path segments
    params: dict[str, str] = attrs.Factory(dict)

    @property
    def json(self) -> Any:
        return self.body


@attrs.define
class Reply:
    """What a route handler returns: a status, a JSON-able body (or raw bytes) and extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = attrs.Factory(dict)
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.body).encode()


def _words(text: str) -> int:
    return len(text.split())


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def prompt_text(body: dict[str, Any]) -> str:
    """The prompt of a chat or completions request as one string (messages joined by newlines)."""
    if "messages" in body:
        return "\n".join(_content_text(m.get("content")) for m in body.get("messages") or ())
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return "\n".join(str(p) for p in prompt)
    return str(prompt)


def default_responder(body: dict[str, Any]) -> str:
    """A deterministic reply: ``echo: `` and the last message (or the prompt's last line)."""
    if body.get("messages"):
        last = _content_text(body["messages"][-1].get("content"))
    else:
        last = prompt_text(body).rstrip("\n").rsplit("\n", 1)[-1]
    return f"echo: {last}"


def embedding_vector(text: str, dim: int = EMBEDDING_DIM) -> list[float]:
    """A deterministic unit vector from the sha256 of `text`."""
    raw = hashlib.sha256(text.encode()).digest()
    values = [(raw[i % len(raw)] / 127.5) - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _error(status: int, message: str, kind: str = "server_error",
           headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": str(status)}},
                 headers=dict(headers or {}))


def _apply_stop_and_limit(text: str, body: dict[str, Any]) -> tuple[str, str]:
    finish = "stop"
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    for s in stop or ():
        if s and s in text:
            text = text[: text.index(s)]
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(limit, int) and limit > 0 and _words(text) > limit:
        text = " ".join(text.split()[:limit])
        finish = "length"
    return text, finish


RouteHandler = Callable[["OpenAICompatServer", RecordedRequest], Reply]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default (5) drops connections when 16 client threads connect at once


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "honing-test-server/1"
    timeout = 10  # idle keep-alive connections close after this

    srv: OpenAICompatServer  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.srv._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.srv._track(self.connection, add=False)

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
        srv = self.srv
        number = srv._admit()
        if number is None:  # over max_requests: answer and let the server stop
            self._send(_error(503, "test server request limit reached"), close=True)
            return
        route, params = srv.match(method, path)
        fault = "ok"
        if route is not None and method == "POST" and srv.faultable(path):
            fault = srv._next_fault()
        srv._record(RecordedRequest(method, path, headers, body, time.time(), fault, params))
        if srv.latency:
            srv._stop.wait(srv.latency)
        if route is None:
            self._send(_error(404, f"no route {method} {path}", "invalid_request_error"))
            return
        if srv.api_key is not None and headers.get("authorization") != f"Bearer {srv.api_key}":
            got = headers.get("authorization", "")
            shown = got.removeprefix("Bearer ") if srv.leak_key_in_errors else "<redacted>"
            self._send(_error(401, f"Incorrect API key provided: {shown}", "invalid_request_error"))
            return
        if method == "POST" and not isinstance(body, dict):
            self._send(_error(400, "request body must be a JSON object", "invalid_request_error"))
            return
        if fault == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault == "timeout":
            srv._stop.wait(srv.timeout_sleep)
            fault = "ok"
        if fault == "429_retry_after":
            self._send(_error(429, "rate limited, retry later", "rate_limit_error",
                              {"Retry-After": _fmt_seconds(srv.retry_after)}))
            return
        if len(fault) == 3 and fault.isdigit():
            status = int(fault)
            kind = "rate_limit_error" if status == 429 else (
                "server_error" if status >= 500 else "invalid_request_error")
            self._send(_error(status, f"injected fault {status}", kind))
            return
        if fault == "garbage_body":
            self._send(Reply(200, raw=srv._garbage(40).encode(), headers={"Content-Type": "text/plain"}))
            return
        try:
            reply = route(srv, RecordedRequest(method, path, headers, body, time.time(), fault, params))
        except Exception as exc:  # noqa: BLE001 - a responder bug becomes a 500 the test can see
            self._send(_error(500, f"responder failed: {type(exc).__name__}: {exc}"))
            return
        if fault == "truncated_json":
            data = reply.encode()
            reply = Reply(200, raw=data[: len(data) // 2])
        self._send(reply)

    def _send(self, reply: Reply, close: bool = False) -> None:
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


def _fmt_seconds(value: float | str) -> str:
    if isinstance(value, str):  # sent as is (e.g. an HTTP date)
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


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


# --- routes -----------------------------------------------------------------------------------------

def _chat_completions(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    body = req.body
    text = srv._reply_text(body, req.fault)
    text, finish = _apply_stop_and_limit(text, body)
    prompt_tokens = _words(prompt_text(body))
    completion_tokens = _words(text)
    return Reply(200, {
        "id": f"chatcmpl-{srv._next_id()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def _completions(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    body = req.body
    text = srv._reply_text(body, req.fault)
    text, finish = _apply_stop_and_limit(text, body)
    prompt_tokens = _words(prompt_text(body))
    completion_tokens = _words(text)
    return Reply(200, {
        "id": f"cmpl-{srv._next_id()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model", "test-model"),
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def _embeddings(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    body = req.body
    inputs = body.get("input", "")
    if isinstance(inputs, str):
        inputs = [inputs]
    texts = [x if isinstance(x, str) else json.dumps(x) for x in inputs]
    dim = body.get("dimensions") or EMBEDDING_DIM
    tokens = sum(_words(t) for t in texts)
    return Reply(200, {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": embedding_vector(t, dim)}
                 for i, t in enumerate(texts)],
        "model": body.get("model", "test-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


def _models(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    return Reply(200, {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "honing-test"} for name in srv.models
    ]})


# --- files and fine-tuning ---------------------------------------------------------------------------

#: Job statuses of the OpenAI fine-tuning API; a job whose status is one of `FINAL_STATUSES` is done.
FINE_TUNE_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


@attrs.frozen
class FineTuneScript:
    """How fine-tuning jobs progress: every retrieval moves a job one step along `statuses` (the last
    sticks, so ``("queued", "running")`` never finishes: a timeout test). A job that reaches ``"failed"``
    reports `error_message`; a succeeded job has `trained_tokens` (words in its training file)."""

    statuses: tuple[str, ...] = attrs.field(
        default=("validating_files", "queued", "running", "succeeded"), converter=tuple)
    error_message: str = "The job failed due to an internal error."
    error_code: str = "server_error"

    def __attrs_post_init__(self) -> None:
        if not self.statuses:
            raise ValueError("a FineTuneScript needs at least one status")
        unknown = [s for s in self.statuses if s not in FINE_TUNE_STATUSES]
        if unknown:
            raise ValueError(f"unknown fine-tuning status(es) {unknown}; known: {', '.join(FINE_TUNE_STATUSES)}")


def _check_fine_tune_file(content: bytes) -> str | None:
    """What is wrong with a chat fine-tuning JSONL file (OpenAI's checks, loosely), or None."""
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return "the file is not UTF-8 text"
    rows = [line for line in lines if line.strip()]
    if not rows:
        return "the file has no examples"
    for number, line in enumerate(rows, 1):
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {number} is not valid JSON"
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            return f"line {number} has no 'messages' list"
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool") \
                    or not isinstance(m.get("content"), str):
                return f"line {number} has a message without a valid role and string content"
        if messages[-1]["role"] != "assistant":
            return f"line {number} does not end with an assistant message"
    return None


def _file_object(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "object": "file", "bytes": len(record["content"]),
            "created_at": record["created_at"], "filename": record["filename"], "purpose": record["purpose"],
            "status": "processed", "status_details": None}


def _create_file(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    body = req.body or {}
    upload = body.get("file")
    purpose = body.get("purpose")
    if not isinstance(upload, dict) or not purpose:
        return _error(400, "a file upload needs multipart fields 'file' and 'purpose'", "invalid_request_error")
    content = upload["content"]
    if purpose == "fine-tune":
        problem = _check_fine_tune_file(content)
        if problem:
            return _error(400, f"Invalid file format for Fine-Tuning API: {problem}", "invalid_request_error")
    file_id = "file-" + hashlib.sha256(content).hexdigest()[:24]
    record = {"id": file_id, "content": content, "filename": upload.get("filename") or "upload",
              "purpose": purpose, "created_at": int(time.time())}
    with srv._lock:
        srv.files[file_id] = record
    return Reply(200, _file_object(record))


def _get_file_record(srv: OpenAICompatServer, file_id: str) -> dict[str, Any] | None:
    with srv._lock:
        return srv.files.get(file_id)


def _retrieve_file(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    record = _get_file_record(srv, req.params["file_id"])
    if record is None:
        return _error(404, f"No such File object: {req.params['file_id']}", "invalid_request_error")
    return Reply(200, _file_object(record))


def _file_content(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    record = _get_file_record(srv, req.params["file_id"])
    if record is None:
        return _error(404, f"No such File object: {req.params['file_id']}", "invalid_request_error")
    return Reply(200, raw=record["content"], headers={"Content-Type": "application/octet-stream"})


def _job_object(job: dict[str, Any]) -> dict[str, Any]:
    status = job["statuses"][min(job["step"], len(job["statuses"]) - 1)]
    done = status in FINAL_STATUSES
    return {
        "id": job["id"], "object": "fine_tuning.job", "model": job["model"], "created_at": job["created_at"],
        "finished_at": job["created_at"] + job["step"] if done else None,
        "fine_tuned_model": job["fine_tuned_model"] if status == "succeeded" else None,
        "organization_id": "org-honing-test", "result_files": [], "status": status,
        "validation_file": job["validation_file"], "training_file": job["training_file"],
        "hyperparameters": job["hyperparameters"], "trained_tokens": job["trained_tokens"] if done else None,
        "error": ({"code": job["error_code"], "message": job["error_message"], "param": None}
                  if status == "failed" else None),
        "seed": job["seed"], "suffix": job["suffix"], "estimated_finish": None, "integrations": [],
    }


def _create_fine_tuning_job(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    body = req.body
    model, training_file = body.get("model"), body.get("training_file")
    if not isinstance(model, str) or not model or not isinstance(training_file, str):
        return _error(400, "a fine-tuning job needs 'model' and 'training_file'", "invalid_request_error")
    record = _get_file_record(srv, training_file)
    if record is None:
        return _error(400, f"invalid training_file: {training_file}", "invalid_request_error")
    if record["purpose"] != "fine-tune":
        return _error(400, f"File {training_file} has purpose {record['purpose']!r}, not 'fine-tune'",
                      "invalid_request_error")
    hyper = dict(body.get("hyperparameters") or {})
    hyper = {"n_epochs": hyper.get("n_epochs", "auto"), "batch_size": hyper.get("batch_size", "auto"),
             "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto")}
    key = json.dumps({k: body.get(k) for k in ("model", "training_file", "hyperparameters", "suffix", "seed")},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    suffix = body.get("suffix") or ""
    script = srv.fine_tune_script
    job = {
        "id": "ftjob-" + digest[:24], "model": model, "training_file": training_file,
        "validation_file": body.get("validation_file"), "hyperparameters": hyper,
        "seed": int(body.get("seed") or 0), "suffix": suffix or None, "created_at": int(time.time()),
        "fine_tuned_model": f"ft:{model}:honing-test:{suffix}:{digest[:8]}",
        "trained_tokens": _words(record["content"].decode("utf-8", errors="replace")),
        "statuses": script.statuses, "error_message": script.error_message, "error_code": script.error_code,
        "step": 0,
    }
    with srv._lock:
        srv.jobs[job["id"]] = job
        return Reply(200, _job_object(job))


def _retrieve_fine_tuning_job(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    with srv._lock:
        job = srv.jobs.get(req.params["job_id"])
        if job is None:
            return _error(404, f"No such fine-tuning job: {req.params['job_id']}", "invalid_request_error")
        status = job["statuses"][min(job["step"], len(job["statuses"]) - 1)]
        if status not in FINAL_STATUSES:
            job["step"] += 1
        return Reply(200, _job_object(job))


def _cancel_fine_tuning_job(srv: OpenAICompatServer, req: RecordedRequest) -> Reply:
    with srv._lock:
        job = srv.jobs.get(req.params["job_id"])
        if job is None:
            return _error(404, f"No such fine-tuning job: {req.params['job_id']}", "invalid_request_error")
        status = job["statuses"][min(job["step"], len(job["statuses"]) - 1)]
        if status in FINAL_STATUSES:
            return _error(400, f"Job has already {status}", "invalid_request_error")
        job["statuses"] = (*job["statuses"][:job["step"]], "cancelled")
        return Reply(200, _job_object(job))


#: The default route table. Each handler takes ``(server, recorded_request)`` and returns a `Reply`.
#: A path segment ``{name}`` matches any one segment; its value is in ``recorded_request.params``.
ROUTES: dict[tuple[str, str], RouteHandler] = {
    ("POST", "/v1/chat/completions"): _chat_completions,
    ("POST", "/v1/completions"): _completions,
    ("POST", "/v1/embeddings"): _embeddings,
    ("GET", "/v1/models"): _models,
}

#: The files and fine-tuning routes, served when the server is made with ``fine_tuning=...``.
FINE_TUNING_ROUTES: dict[tuple[str, str], RouteHandler] = {
    ("POST", "/v1/files"): _create_file,
    ("GET", "/v1/files/{file_id}"): _retrieve_file,
    ("GET", "/v1/files/{file_id}/content"): _file_content,
    ("POST", "/v1/fine_tuning/jobs"): _create_fine_tuning_job,
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): _retrieve_fine_tuning_job,
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): _cancel_fine_tuning_job,
}

#: POST paths that faults apply to by default.
FAULTABLE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


class OpenAICompatServer:
    """A loopback OpenAI-compatible server (see the module docstring). Use it as a context manager.

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
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> OpenAICompatServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"srv": self})
        httpd = _HTTPServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="honing-test-server", daemon=True)
        self._thread.start()
        self._timer = threading.Thread(target=self._lifetime_watch, name="honing-test-server-timer",
                                       daemon=True)
        self._timer.start()
        return self

    def _lifetime_watch(self) -> None:
        if not self._stop.wait(self.max_lifetime):
            self.stop()

    def stop(self) -> None:
        """Stop serving and close every open connection (idempotent, callable from any thread)."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
            self._stop.set()
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
        return self._httpd is not None and not self._stop.is_set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return self._httpd.server_address[1]

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
        kinds = [_check_kind(k) for k in faults]
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

    # --- internals used by the handler --------------------------------------------------------------

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

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _garbage(self, n_words: int) -> str:
        with self._lock:
            return " ".join(self._garbage_rng.choice(_WORDS) + self._garbage_rng.choice("!?#{}[],:\"")
                            for _ in range(n_words))

    def _reply_text(self, body: dict[str, Any], fault: str) -> str:
        if fault == "empty":
            return ""
        if fault == "garbage":
            return self._garbage(12)
        return str(self.responder(body))

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
