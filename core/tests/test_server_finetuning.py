"""The loopback server's files and fine-tuning routes: upload, validation, scripted job progress, and
the same API driven through litellm, as honing-finetune's hosted path uses it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from honing.testing.server import FineTuneScript, OpenAICompatServer

pytestmark = pytest.mark.server

GOOD = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                         {"role": "assistant", "content": f"a{i}"}]}).encode() + b"\n"
                for i in range(3))


def call(method: str, url: str, body: Any = None, *, raw: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def upload(url: str, content: bytes, purpose: str = "fine-tune", filename: str = "train.jsonl") -> tuple[int, Any]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    status, raw = call("POST", url + "/files", raw=body, content_type=f"multipart/form-data; boundary={boundary}")
    return status, json.loads(raw)


def test_routes_are_off_unless_asked_for(openai_server: OpenAICompatServer) -> None:
    assert upload(openai_server.url, GOOD)[0] == 404
    assert call("GET", openai_server.url + "/fine_tuning/jobs/ftjob-x")[0] == 404


def test_upload_retrieve_and_download_a_file(make_openai_server: Any) -> None:
    srv = make_openai_server(fine_tuning=True)
    status, created = upload(srv.url, GOOD)
    assert status == 200 and created["object"] == "file" and created["purpose"] == "fine-tune"
    assert created["bytes"] == len(GOOD) and created["filename"] == "train.jsonl"
    assert upload(srv.url, GOOD)[1]["id"] == created["id"]  # ids come from content
    status, raw = call("GET", f"{srv.url}/files/{created['id']}")
    assert status == 200 and json.loads(raw)["id"] == created["id"]
    assert call("GET", f"{srv.url}/files/{created['id']}/content") == (200, GOOD)
    assert srv.files[created["id"]]["content"] == GOOD
    status, raw = call("GET", f"{srv.url}/files/file-missing")
    assert status == 404 and "No such File object: file-missing" in json.loads(raw)["error"]["message"]


@pytest.mark.parametrize("content,problem", [
    (b"", "no examples"),
    (b"{not json\n", "line 1 is not valid JSON"),
    (GOOD + b'{"prompt": "x"}\n', "line 4 has no 'messages' list"),
    (b'{"messages": [{"role": "robot", "content": "x"}]}\n', "line 1 has a message without a valid role"),
    (b'{"messages": [{"role": "user", "content": "x"}]}\n', "line 1 does not end with an assistant message"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_fine_tune_files_are_rejected_with_the_line(make_openai_server: Any, content: bytes,
                                                        problem: str) -> None:
    srv = make_openai_server(fine_tuning=True)
    status, reply = upload(srv.url, content)
    assert status == 400 and problem in reply["error"]["message"]
    assert srv.files == {}
    # other purposes are stored as they are
    assert upload(srv.url, content, purpose="batch")[0] == 200


def _create_job(srv: OpenAICompatServer, **extra: Any) -> tuple[int, Any]:
    file_id = upload(srv.url, GOOD)[1]["id"]
    status, raw = call("POST", srv.url + "/fine_tuning/jobs",
                       {"model": "gpt-4o-mini-2024-07-18", "training_file": file_id, "suffix": "t", **extra})
    return status, json.loads(raw)


def test_a_job_moves_one_status_per_retrieval_and_names_its_model(make_openai_server: Any) -> None:
    srv = make_openai_server(fine_tuning=True)
    status, job = _create_job(srv, hyperparameters={"n_epochs": 2})
    assert status == 200 and job["id"].startswith("ftjob-") and job["status"] == "validating_files"
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert job["fine_tuned_model"] is None and job["trained_tokens"] is None
    seen = []
    for _ in range(5):
        seen.append(json.loads(call("GET", f"{srv.url}/fine_tuning/jobs/{job['id']}")[1]))
    assert [j["status"] for j in seen] == ["queued", "running", "succeeded", "succeeded", "succeeded"]
    assert seen[-1]["fine_tuned_model"].startswith("ft:gpt-4o-mini-2024-07-18:honing-test:t:")
    assert seen[-1]["trained_tokens"] == len(GOOD.split()) and seen[-1]["error"] is None
    assert _create_job(srv, hyperparameters={"n_epochs": 2})[1]["id"] == job["id"]  # same request, same id
    assert _create_job(srv, hyperparameters={"n_epochs": 3})[1]["id"] != job["id"]


def test_a_scripted_failure_carries_its_message(make_openai_server: Any) -> None:
    srv = make_openai_server(fine_tuning=FineTuneScript(statuses=("running", "failed"), error_message="too few"))
    _, job = _create_job(srv)
    last = json.loads(call("GET", f"{srv.url}/fine_tuning/jobs/{job['id']}")[1])
    assert last["status"] == "failed" and last["error"]["message"] == "too few" and last["fine_tuned_model"] is None


def test_cancel_and_bad_job_requests(make_openai_server: Any) -> None:
    srv = make_openai_server(fine_tuning=FineTuneScript(statuses=("queued", "running")))
    _, job = _create_job(srv)
    status, raw = call("POST", f"{srv.url}/fine_tuning/jobs/{job['id']}/cancel", {})
    assert status == 200 and json.loads(raw)["status"] == "cancelled"
    status, raw = call("POST", f"{srv.url}/fine_tuning/jobs/{job['id']}/cancel", {})
    assert status == 400 and "already cancelled" in json.loads(raw)["error"]["message"]
    assert call("GET", f"{srv.url}/fine_tuning/jobs/ftjob-nope")[0] == 404
    status, raw = call("POST", srv.url + "/fine_tuning/jobs", {"model": "m", "training_file": "file-nope"})
    assert status == 400 and "invalid training_file: file-nope" in json.loads(raw)["error"]["message"]
    batch = upload(srv.url, GOOD, purpose="batch")[1]["id"]
    status, raw = call("POST", srv.url + "/fine_tuning/jobs", {"model": "m", "training_file": batch})
    assert status == 400 and "not 'fine-tune'" in json.loads(raw)["error"]["message"]
    assert call("POST", srv.url + "/fine_tuning/jobs", {"training_file": batch})[0] == 400


def test_litellm_drives_the_whole_api(make_openai_server: Any) -> None:
    """litellm's create_file / create_fine_tuning_job / retrieve_fine_tuning_job against the server."""
    from honing.lm.client import import_litellm

    litellm = import_litellm()
    srv = make_openai_server(fine_tuning=True)
    kwargs = {"custom_llm_provider": "openai", "api_base": srv.url, "api_key": "test-key"}
    created = litellm.create_file(file=("train.jsonl", GOOD), purpose="fine-tune", **kwargs)
    assert srv.files[created.id]["content"] == GOOD
    job = litellm.create_fine_tuning_job(model="gpt-4o-mini-2024-07-18", training_file=created.id,
                                         hyperparameters={"n_epochs": 1}, suffix="lit", **kwargs)
    statuses = [job.status]
    while statuses[-1] not in ("succeeded", "failed", "cancelled"):
        job = litellm.retrieve_fine_tuning_job(fine_tuning_job_id=job.id, **kwargs)
        statuses.append(job.status)
    assert statuses == ["validating_files", "queued", "running", "succeeded"]
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:honing-test:lit:")
    assert [(r.method, r.path) for r in srv.requests][:2] == [("POST", "/v1/files"), ("POST", "/v1/fine_tuning/jobs")]
