"""BootstrapFinetune without the local model: the contract (hosted target on the loopback server), the
training data format, predictor matching by name, the hosted job's failures, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import honing as hn
import pytest
from finetune_helpers import labelled_teacher
from honing.adapters import ChatAdapter, JSONAdapter, TranscriptAdapter
from honing.adapters.transcript import CONTENT_FREE
from honing.errors import OptimizerError
from honing.testing.contract import ContractClassify, OptimizerContract, contract_examples, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing.testing.server import FineTuneScript, OpenAICompatServer, Reply
from honing.tracing import TraceRecord
from honing_finetune import BootstrapFinetune
from honing_finetune.data import make_example

pytestmark = pytest.mark.server

BASE = "openai/gpt-4o-mini-2024-07-18"
QUICK = {"poll_interval": 0.01, "timeout": 30}


def hosted_target(server: OpenAICompatServer) -> Any:
    return hn.LM(BASE, api_base=server.url, api_key="test-key")


class TestHostedContract(OptimizerContract):
    """The shared optimizer contract, training through a hosted fine-tuning API (the loopback server)."""

    optimizer_name = "BootstrapFinetune"

    @pytest.fixture(autouse=True)
    def _server(self, openai_env: OpenAICompatServer) -> None:
        self.server = openai_env

    def make_optimizer(self, **overrides: Any) -> hn.Optimizer:
        return BootstrapFinetune(**{"metric": intent_match, "target": BASE, "train_kwargs": QUICK, **overrides})

    def compile(self, optimizer: hn.Optimizer, student: hn.Module, trainset: list[hn.Example]) -> hn.Module:
        return optimizer.compile(student, trainset=trainset, teacher=labelled_teacher(student, trainset))


# ----------------------------------------------------------------------------------------------------
# what the hosted path does


def test_hosted_job_trains_on_passing_traces_and_installs_the_model(ft_server: OpenAICompatServer,
                                                                     tmp_path: Path) -> None:
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    fake = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    with hn.context(lm=fake):
        compiled = BootstrapFinetune(metric=intent_match, target=hosted_target(ft_server), train_kwargs=QUICK).compile(
            student, trainset=trainset, teacher=labelled_teacher(student, trainset), run_dir=tmp_path / "run")
    predictor = compiled.predictors()[0]
    assert predictor.lm.model.startswith("openai/ft:gpt-4o-mini-2024-07-18:honing-test:honing:")
    assert predictor.lm.api_base == ft_server.url
    assert predictor.adapter == "chat"  # the format the data was written in, for the hosted model
    # one upload, one job, polled until it succeeded
    paths = [(r.method, r.path) for r in ft_server.requests]
    assert paths[:2] == [("POST", "/v1/files"), ("POST", "/v1/fine_tuning/jobs")]
    assert any(m == "GET" and p.startswith("/v1/fine_tuning/jobs/ftjob-") for m, p in paths[2:])
    job_request = ft_server.requests[1].body
    assert job_request["model"] == "gpt-4o-mini-2024-07-18" and job_request["suffix"] == "honing"
    uploaded = next(iter(ft_server.files.values()))
    rows = [json.loads(line) for line in uploaded["content"].decode().splitlines()]
    assert len(rows) == 12 and all(set(r) == {"messages"} for r in rows)
    assert (tmp_path / "run" / "0-openai-gpt-4o-mini-2024-07-18" / "train.chat.jsonl").read_bytes() == uploaded["content"]
    # the fine-tuned model is used: it answers what it was trained on
    for example in trainset:
        assert compiled(**example.inputs()).intent == example.intent
    record = compiled.compile_record
    (entry,) = record.candidates
    assert entry["backend"] == "hosted" and entry["examples"] == 12
    assert entry["statuses"][-1] == "succeeded" and entry["job_id"].startswith("ftjob-")
    assert entry["hyperparameters"]["n_epochs"] == "auto"
    assert any("12 of 12 teacher runs passed" in n for n in record.notes)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["jobs"][0]["model"] == predictor.lm.model


def test_training_data_is_exactly_what_the_adapter_sends(tmp_path: Path) -> None:
    """The prompt of every training example is the request the fine-tuned predictor sends for that input
    (choice scoring), and the completion is the scored choice with its terminator."""
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    student.demos = [{"text": "card not here yet", "intent": "card_arrival"}]
    teacher = labelled_teacher(student, trainset)
    compiled_lm = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    for exclude in (False, True):
        examples = []
        with hn.context(lm=compiled_lm), hn.trace() as trace:
            for ex in trainset[:3]:
                teacher(**ex.inputs())
        for i, record in enumerate(trace.records):
            examples.append(make_example(TranscriptAdapter(), student, "self", record, i, exclude_demos=exclude))
        probe = FakeLM(responder=lambda r: {c: 0.0 for c in r.choices}, scoring=True)
        replay = student.deepcopy()
        if exclude:
            replay.demos = []
        for example, record in zip(examples, trace.records):
            with hn.context(lm=probe):
                replay(**record.inputs)
            # the query's scoring request (calibration also scores the content-free inputs)
            content_free = [f"Text: {text}\nIntent:" for text in CONTENT_FREE]
            request = [r for r in probe.requests if not any(r.prompt.endswith(cf) for cf in content_free)][-1]
            assert example.prompt == request.prompt
            assert example.prompt == TranscriptAdapter().render_prompt(
                ContractClassify, [] if exclude else student.demos, record.inputs)
            assert f" {record.outputs['intent']}" in request.choices
            assert example.completion == f" {record.outputs['intent']}\n"
            assert ("card not here yet" in example.prompt) is (not exclude)
            assert example.chat_row()["messages"] == [{"role": "user", "content": example.prompt},
                                                      {"role": "assistant", "content": record.outputs["intent"]}]


@pytest.mark.parametrize("adapter", [ChatAdapter(), JSONAdapter()])
def test_chat_and_json_adapters_make_training_data(adapter: Any) -> None:
    """Chat-family adapters (JSON included, unlike the reference) produce messages that are the request
    plus the reply the adapter parses back into the traced outputs."""
    predictor = hn.Predict(ContractClassify)
    predictor.demos = [{"text": "pin blocked", "intent": "pin_blocked"}]
    record = TraceRecord("self", predictor, {"text": "where is my card"}, {"intent": "card_arrival"})
    example = make_example(adapter, predictor, "self", record, 0, exclude_demos=False)
    request = adapter.format(ContractClassify, predictor.demos, {"text": "where is my card"})
    assert list(example.messages[:-1]) == list(request.messages)
    assert example.messages[-1]["role"] == "assistant"
    assert adapter.parse(ContractClassify, example.messages[-1]["content"]) == {"intent": "card_arrival"}
    assert example.kind == "rendered"
    dropped = make_example(adapter, predictor, "self", record, 0, exclude_demos=True)
    assert len(dropped.messages) == len(example.messages) - 2  # the demo's user/assistant turns


class TwoStep(hn.Module):
    """Two predictors called in the opposite order to their declaration."""

    def __init__(self) -> None:
        self.first = hn.Predict("text -> topic")
        self.second = hn.Predict("text, topic -> intent")

    def forward(self, text: str) -> Any:
        topic = self.first(text=text).topic
        return self.second(text=text, topic=topic)


class Reversed(TwoStep):
    def forward(self, text: str) -> Any:
        intent = self.second(text=text, topic="any").intent
        self.first(text=text)
        return hn.Prediction(intent=intent)


def test_non_multitask_matches_predictors_by_name_not_position(ft_server: OpenAICompatServer, tmp_path: Path) -> None:
    trainset = [hn.Example(text=t, intent=i).with_inputs("text") for t, i in
                [("card late", "card_arrival"), ("pin stuck", "pin_blocked")]]
    fake = FakeLM(responder=lambda r: "topic-x" if "Topic:" in r.prompt.splitlines()[-1] else "card_arrival")
    with hn.context(lm=fake):
        compiled = BootstrapFinetune(target=hosted_target(ft_server), multitask=False, train_kwargs=QUICK).compile(
            Reversed(), trainset=trainset, run_dir=tmp_path / "run")
    entries = {tuple(c["predictors"]): c for c in compiled.compile_record.candidates}
    assert set(entries) == {("first",), ("second",)}
    for (name,), entry in entries.items():
        rows = [json.loads(line) for line in Path(entry["data"]["chat_file"]).read_text().splitlines()]
        assert len(rows) == 2
        systems = {r["messages"][0]["content"] for r in rows}
        expected = "Outputs:\n- topic" if name == "first" else "Outputs:\n- intent"
        assert all(expected in s for s in systems), (name, systems)
    assert compiled.first.lm is not compiled.second.lm
    assert len(ft_server.files) == 2


def test_exclude_demos_clears_demos_and_keeps_student(ft_server: OpenAICompatServer) -> None:
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    student.demos = [dict(trainset[0])]
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        compiled = BootstrapFinetune(target=hosted_target(ft_server), exclude_demos=True, train_kwargs=QUICK).compile(
            student, trainset=trainset)
    assert compiled.predictors()[0].demos == []
    assert student.demos == [dict(trainset[0])] and student.lm is None
    rows = [json.loads(line) for line in next(iter(ft_server.files.values()))["content"].decode().splitlines()]
    assert all(len(r["messages"]) == 3 for r in rows)  # system, user, assistant: no demo turns


# ----------------------------------------------------------------------------------------------------
# failures of the hosted job


def _compile_hosted(server: OpenAICompatServer, run_dir: Path, resume: bool = False, **train_kwargs: Any) -> hn.Module:
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        return BootstrapFinetune(metric=intent_match, target=hosted_target(server),
                                 train_kwargs={**QUICK, **train_kwargs}).compile(
            student, trainset=trainset, teacher=labelled_teacher(student, trainset), run_dir=run_dir,
            resume=resume)


def test_a_failed_hosted_job_raises_the_providers_message_and_keeps_the_files(ft_server: OpenAICompatServer,
                                                                              tmp_path: Path) -> None:
    ft_server.fine_tune_script = FineTuneScript(statuses=("queued", "running", "failed"),
                                                error_message="Training file has too few examples")
    with pytest.raises(OptimizerError, match=r"ftjob-\w+ failed: Training file has too few examples") as info:
        _compile_hosted(ft_server, tmp_path / "run")
    assert "kept in" in str(info.value)
    assert (tmp_path / "run" / "0-openai-gpt-4o-mini-2024-07-18" / "train.chat.jsonl").is_file()


def test_a_hosted_job_that_does_not_finish_times_out(ft_server: OpenAICompatServer, tmp_path: Path) -> None:
    ft_server.fine_tune_script = FineTuneScript(statuses=("queued", "running"))
    with pytest.raises(OptimizerError, match=r"still 'running' after .* \(timeout 0.3 s\).*retrieve_fine_tuning_job"):
        _compile_hosted(ft_server, tmp_path / "run", timeout=0.3, poll_interval=0.05)
    assert (tmp_path / "run" / "0-openai-gpt-4o-mini-2024-07-18" / "train.prompt.jsonl").is_file()


def test_resume_after_a_timeout_polls_the_job_already_paid_for(ft_server: OpenAICompatServer,
                                                               tmp_path: Path) -> None:
    ft_server.fine_tune_script = FineTuneScript(statuses=("queued", "running"))
    with pytest.raises(OptimizerError, match="still 'running'"):
        _compile_hosted(ft_server, tmp_path / "run", timeout=0.3, poll_interval=0.05)
    (job_id,) = ft_server.jobs
    ft_server.jobs[job_id]["statuses"] = ("running", "succeeded")  # the provider finishes it later
    posts = [r.path for r in ft_server.requests if r.method == "POST"]
    compiled = _compile_hosted(ft_server, tmp_path / "run", resume=True, timeout=60)  # a longer wait is allowed
    assert [r.path for r in ft_server.requests if r.method == "POST"] == posts  # no new upload, no new job
    (entry,) = compiled.compile_record.candidates
    assert entry["job_id"] == job_id and compiled.predictors()[0].lm.model == \
        "openai/" + ft_server.jobs[job_id]["fine_tuned_model"]
    assert any(f"polling the job {job_id} started earlier" in n for n in compiled.compile_record.notes)


def test_resume_after_a_failed_job_starts_a_new_one(ft_server: OpenAICompatServer, tmp_path: Path) -> None:
    ft_server.fine_tune_script = FineTuneScript(statuses=("running", "failed"), error_message="quota")
    with pytest.raises(OptimizerError, match="failed: quota"):
        _compile_hosted(ft_server, tmp_path / "run")
    ft_server.fine_tune_script = FineTuneScript()
    ft_server.jobs.clear()  # the same request gets the same id: let the server forget the failed job
    compiled = _compile_hosted(ft_server, tmp_path / "run", resume=True)
    assert sum(r.path == "/v1/fine_tuning/jobs" for r in ft_server.requests) == 2
    assert compiled.compile_record.candidates[0]["statuses"][-1] == "succeeded"


def test_a_rejected_upload_is_reported(ft_server: OpenAICompatServer, tmp_path: Path) -> None:
    error = {"error": {"message": "File too large for your organization", "type": "invalid_request_error",
                       "param": None, "code": "400"}}
    ft_server.add_route("POST", "/v1/files", lambda srv, req: Reply(400, error))
    with pytest.raises(OptimizerError, match="uploading .* failed: .*File too large for your organization"):
        _compile_hosted(ft_server, tmp_path / "run")


def test_resume_reuses_a_finished_job(ft_server: OpenAICompatServer, tmp_path: Path) -> None:
    first = _compile_hosted(ft_server, tmp_path / "run")
    jobs = [r for r in ft_server.requests if r.path == "/v1/fine_tuning/jobs"]
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        again = BootstrapFinetune(metric=intent_match, target=hosted_target(ft_server), train_kwargs=QUICK).compile(
            student, trainset=trainset, teacher=labelled_teacher(student, trainset), run_dir=tmp_path / "run",
            resume=True)
    assert [r for r in ft_server.requests if r.path == "/v1/fine_tuning/jobs"] == jobs
    assert again.predictors()[0].lm.model == first.predictors()[0].lm.model
    assert any("reused the model trained earlier" in n for n in again.compile_record.notes)


# ----------------------------------------------------------------------------------------------------
# bad input: clear errors, before anything is spent


def test_unknown_train_kwargs_are_named() -> None:
    with pytest.raises(OptimizerError, match=r"unknown train_kwargs 'epoch', 'lr'.*local training takes epochs, "
                                             r"learning_rate"):
        BootstrapFinetune(train_kwargs={"lr": 1e-4, "epoch": 2})


@pytest.mark.parametrize("lr", [0, -1e-4, float("nan"), "fast"])
def test_a_learning_rate_must_be_positive(lr: Any) -> None:
    with pytest.raises(OptimizerError, match="learning rate must be a number > 0"):
        BootstrapFinetune(train_kwargs={"learning_rate": lr})


@pytest.mark.parametrize("kwargs,match", [
    ({"optimizer": "adagrad"}, "must be one of adamw, adam, sgd"),
    ({"epochs": 0}, r"'epochs'\] must be a positive integer"),
    ({"lora_rank": 2.5}, r"'lora_rank'\] must be a positive integer"),
    ({"tensor_type": "q2_k"}, "must be one of q8_0, f16, f32"),
    ({"target_modules": "q_proj"}, "must be a list of module names"),
])
def test_bad_train_kwargs_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(OptimizerError, match=match):
        BootstrapFinetune(train_kwargs=kwargs)


def test_other_bad_settings() -> None:
    with pytest.raises(OptimizerError, match="needs a provider prefix"):
        BootstrapFinetune(target="smollm2-135m")
    with pytest.raises(OptimizerError, match="num_threads must be a positive integer"):
        BootstrapFinetune(num_threads=0)
    with pytest.raises(OptimizerError, match="target must be a model name"):
        BootstrapFinetune(target=42)


def test_keys_of_the_other_backend_are_named(ft_server: OpenAICompatServer) -> None:
    fake = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    with hn.context(lm=fake), pytest.raises(OptimizerError, match=r"'learning_rate', 'lora_rank' do not apply to "
                                                                 r"hosted training.*learning_rate_multiplier"):
        BootstrapFinetune(target=hosted_target(ft_server), train_kwargs={"lora_rank": 4, "learning_rate": 1e-4}).compile(
            hn.Predict(ContractClassify), trainset=contract_examples())
    assert fake.requests == [] and ft_server.count == 0


def test_no_passing_trace_says_how_many_were_tried(ft_server: OpenAICompatServer) -> None:
    fake = FakeLM(responder=lambda request: "unknown")  # never a training example's intent
    with hn.context(lm=fake), pytest.raises(OptimizerError, match=r"no teacher run passed the metric.*tried 12 "
                                                                 r"trainset examples \(0 of 12 teacher runs passed, "
                                                                 r"12 failed the metric\)"):
        BootstrapFinetune(metric=intent_match, target=hosted_target(ft_server)).compile(
            hn.Predict(ContractClassify, decoding="generate"), trainset=contract_examples())
    assert ft_server.count == 0


def test_a_model_that_cannot_be_trained_is_refused_before_any_call(tmp_path: Path) -> None:
    fake = FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)
    not_gguf = tmp_path / "weights.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 a zip, not a model")
    cases = [
        (None, r"cannot train 'fake/scripted': local training needs a local GGUF model"),
        ("local/no-such-model", r"needs the base model as a local GGUF file: unknown local model 'no-such-model'"),
        (f"local/{not_gguf}", r"is not a GGUF file"),
        ("anthropic/claude-3-5-haiku-latest", r"cannot train 'anthropic/claude-3-5-haiku-latest'"),
    ]
    for target, match in cases:
        with hn.context(lm=fake), pytest.raises(OptimizerError, match=match):
            BootstrapFinetune(target=target).compile(hn.Predict(ContractClassify), trainset=contract_examples())
    assert fake.requests == []


def test_unexpected_compile_arguments() -> None:
    with hn.context(lm=FakeLM(["x"])), pytest.raises(TypeError, match="unexpected keyword argument.*epochs"):
        BootstrapFinetune(target="local/smollm2-135m").compile(hn.Predict(ContractClassify),
                                                               trainset=contract_examples(), epochs=3)


# ----------------------------------------------------------------------------------------------------
# the command line


def test_compile_from_the_command_line(openai_env: OpenAICompatServer, tmp_path: Path, capsys: Any) -> None:
    from honing.cli import main
    from honing.testing.contract import CONTRACT_DATA

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in CONTRACT_DATA))
    program = str(Path(__file__).parent / "programs" / "classify.py") + ":program"
    out = tmp_path / "tuned.json"
    code = main(["compile", program, "--optimizer", "BootstrapFinetune", "--trainset", str(train),
                 "--metric", "exact_match", "--lm", BASE, "--param", f"train_kwargs={json.dumps(QUICK)}",
                 "--run-dir", str(tmp_path / "run"), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "compiled with BootstrapFinetune" in captured.out
    saved = json.loads(out.read_text())
    assert saved["predictors"][0]["lm"]["model"].startswith("openai/ft:gpt-4o-mini-2024-07-18:honing-test")
    assert saved["optimizer"]["candidates"][0]["backend"] == "hosted"
    assert (tmp_path / "run" / "summary.json").is_file()


def test_compact_adapter_drops_the_choice_list_and_is_pinned(openai_env: OpenAICompatServer, tmp_path: Path) -> None:
    trainset = contract_examples()
    student = hn.Predict(ContractClassify)
    with hn.context(lm=FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)):
        compiled = BootstrapFinetune(metric=intent_match, target=BASE, adapter="transcript_compact",
                                     train_kwargs={**QUICK, "epochs": 2, "learning_rate_multiplier": 0.5}).compile(
            student, trainset=trainset, teacher=labelled_teacher(student, trainset))
    job = next(r.body for r in openai_env.requests if r.path == "/v1/fine_tuning/jobs")
    assert job["hyperparameters"] == {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}
    rows = [json.loads(line) for line in next(iter(openai_env.files.values()))["content"].decode().splitlines()]
    prompts = [r["messages"][0]["content"] for r in rows]
    assert all("Intent is one of" not in p and p.endswith("\nIntent:") for p in prompts)
    assert prompts[0].startswith("Classify the banking customer query into one intent.\n\nText: ")
    assert compiled.predictors()[0].adapter == "transcript_compact"
    path = tmp_path / "tuned.json"
    compiled.save(path)
    fresh = hn.Predict(ContractClassify).load(path)
    assert fresh.adapter == "transcript_compact"
    for example in trainset[:4]:
        assert fresh(**example.inputs()).intent == example.intent
    assert compiled.compile_record.parameters["adapter"] == "transcript_compact"


def test_an_unknown_adapter_is_named() -> None:
    with pytest.raises(OptimizerError, match="unknown adapter 'xml'.*installed: .*transcript_compact"):
        BootstrapFinetune(adapter="xml")
