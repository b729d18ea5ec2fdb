"""The files and fine-tuning jobs emulator: the OpenAI routes ``litellm.create_file`` /
``create_fine_tuning_job`` / ``retrieve_fine_tuning_job`` use (`FINE_TUNING_ROUTES`).

``POST /v1/files`` (multipart upload; fine-tune files are checked line by line like OpenAI does),
``GET /v1/files/{file_id}``, ``GET /v1/files/{file_id}/content``, ``POST /v1/fine_tuning/jobs``,
``GET /v1/fine_tuning/jobs/{job_id}`` and ``POST /v1/fine_tuning/jobs/{job_id}/cancel``. Files and jobs
live in the server's ``files`` and ``jobs`` dicts.

Fine-tuning jobs follow a script (`FineTuneScript`): each retrieval moves a job one status further
along ``statuses`` (the last one sticks), and a job that reaches ``"failed"`` carries ``error_message``.
Ids are derived from content (a file's id from its bytes, a job's from its request), so two identical
runs see identical ids and the fine-tuned model is ``ft:<model>:honing-test:<suffix>:<8 hex>``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from honing.testing.server.messages import RecordedRequest, Reply, count_tokens, error_reply

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
            raise ValueError(f"unknown fine-tuning status(es) {unknown}; "
                             f"known: {', '.join(FINE_TUNE_STATUSES)}")


class _Server(Protocol):
    """What these routes use of the `OpenAICompatServer` that calls them: its uploaded files and jobs
    by id, the script new jobs follow, and the lock that guards them."""

    files: dict[str, dict[str, Any]]
    jobs: dict[str, dict[str, Any]]
    fine_tune_script: FineTuneScript
    _lock: threading.Lock


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


def _create_file(srv: _Server, req: RecordedRequest) -> Reply:
    body = req.body or {}
    upload = body.get("file")
    purpose = body.get("purpose")
    if not isinstance(upload, dict) or not purpose:
        return error_reply(400, "a file upload needs multipart fields 'file' and 'purpose'",
                           "invalid_request_error")
    content = upload["content"]
    if purpose == "fine-tune":
        problem = _check_fine_tune_file(content)
        if problem:
            return error_reply(400, f"Invalid file format for Fine-Tuning API: {problem}",
                               "invalid_request_error")
    file_id = "file-" + hashlib.sha256(content).hexdigest()[:24]
    record = {"id": file_id, "content": content, "filename": upload.get("filename") or "upload",
              "purpose": purpose, "created_at": int(time.time())}
    with srv._lock:
        srv.files[file_id] = record
    return Reply(200, _file_object(record))


def _get_file_record(srv: _Server, file_id: str) -> dict[str, Any] | None:
    with srv._lock:
        return srv.files.get(file_id)


def _retrieve_file(srv: _Server, req: RecordedRequest) -> Reply:
    record = _get_file_record(srv, req.params["file_id"])
    if record is None:
        return error_reply(404, f"No such File object: {req.params['file_id']}", "invalid_request_error")
    return Reply(200, _file_object(record))


def _file_content(srv: _Server, req: RecordedRequest) -> Reply:
    record = _get_file_record(srv, req.params["file_id"])
    if record is None:
        return error_reply(404, f"No such File object: {req.params['file_id']}", "invalid_request_error")
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


def _create_fine_tuning_job(srv: _Server, req: RecordedRequest) -> Reply:
    body = req.body
    model, training_file = body.get("model"), body.get("training_file")
    if not isinstance(model, str) or not model or not isinstance(training_file, str):
        return error_reply(400, "a fine-tuning job needs 'model' and 'training_file'",
                           "invalid_request_error")
    record = _get_file_record(srv, training_file)
    if record is None:
        return error_reply(400, f"invalid training_file: {training_file}", "invalid_request_error")
    if record["purpose"] != "fine-tune":
        return error_reply(400, f"File {training_file} has purpose {record['purpose']!r}, not 'fine-tune'",
                           "invalid_request_error")
    hyper = dict(body.get("hyperparameters") or {})
    hyper = {"n_epochs": hyper.get("n_epochs", "auto"), "batch_size": hyper.get("batch_size", "auto"),
             "learning_rate_multiplier": hyper.get("learning_rate_multiplier", "auto")}
    key_fields = ("model", "training_file", "hyperparameters", "suffix", "seed")
    key = json.dumps({k: body.get(k) for k in key_fields}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()
    suffix = body.get("suffix") or ""
    script = srv.fine_tune_script
    job = {
        "id": "ftjob-" + digest[:24], "model": model, "training_file": training_file,
        "validation_file": body.get("validation_file"), "hyperparameters": hyper,
        "seed": int(body.get("seed") or 0), "suffix": suffix or None, "created_at": int(time.time()),
        "fine_tuned_model": f"ft:{model}:honing-test:{suffix}:{digest[:8]}",
        "trained_tokens": count_tokens(record["content"].decode("utf-8", errors="replace")),
        "statuses": script.statuses, "error_message": script.error_message, "error_code": script.error_code,
        "step": 0,
    }
    with srv._lock:
        srv.jobs[job["id"]] = job
        return Reply(200, _job_object(job))


def _retrieve_fine_tuning_job(srv: _Server, req: RecordedRequest) -> Reply:
    with srv._lock:
        job = srv.jobs.get(req.params["job_id"])
        if job is None:
            return error_reply(404, f"No such fine-tuning job: {req.params['job_id']}",
                               "invalid_request_error")
        status = job["statuses"][min(job["step"], len(job["statuses"]) - 1)]
        if status not in FINAL_STATUSES:
            job["step"] += 1
        return Reply(200, _job_object(job))


def _cancel_fine_tuning_job(srv: _Server, req: RecordedRequest) -> Reply:
    with srv._lock:
        job = srv.jobs.get(req.params["job_id"])
        if job is None:
            return error_reply(404, f"No such fine-tuning job: {req.params['job_id']}",
                               "invalid_request_error")
        status = job["statuses"][min(job["step"], len(job["statuses"]) - 1)]
        if status in FINAL_STATUSES:
            return error_reply(400, f"Job has already {status}", "invalid_request_error")
        job["statuses"] = (*job["statuses"][:job["step"]], "cancelled")
        return Reply(200, _job_object(job))


#: The files and fine-tuning routes, served when the server is made with ``fine_tuning=...``.
FINE_TUNING_ROUTES: dict[tuple[str, str], Callable[[_Server, RecordedRequest], Reply]] = {
    ("POST", "/v1/files"): _create_file,
    ("GET", "/v1/files/{file_id}"): _retrieve_file,
    ("GET", "/v1/files/{file_id}/content"): _file_content,
    ("POST", "/v1/fine_tuning/jobs"): _create_fine_tuning_job,
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): _retrieve_fine_tuning_job,
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): _cancel_fine_tuning_job,
}
