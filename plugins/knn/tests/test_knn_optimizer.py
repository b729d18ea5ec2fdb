"""KNNFewShot: the shared optimizer contract, retrieval, per-call demos, bootstrapping once, bad input."""

from __future__ import annotations

import threading
import time
from typing import Any

import honing as hn
import pytest
from honing.errors import ConfigurationError, OptimizerError
from honing.testing.contract import ContractClassify, OptimizerContract, contract_examples, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder, transcript_blocks
from honing_knn import KNNFewShot, KNNProgram


class TestKNNFewShotContract(OptimizerContract):
    """The contract, on the default embedder. A compiled KNN program is a `KNNProgram` wrapping the
    student, and a saved one loads only into the same wrapper, so the contract's student (which its
    round trip loads into) is the uncompiled wrapper; compiling a plain program is tested below."""

    optimizer_name = "KNNFewShot"

    def make_optimizer(self, **overrides: Any) -> hn.Optimizer:
        return KNNFewShot(**{"k": 4, "seed": 0, **overrides})

    def make_student(self) -> hn.Module:
        return KNNProgram(hn.Predict(ContractClassify))


def fake_lm() -> FakeLM:
    return FakeLM(responder=nearest_demo_responder("Text", "Intent"), scoring=True)


def query_requests(lm: FakeLM, query: str) -> list[Any]:
    return [r for r in lm.requests if transcript_blocks(r.text())[-1].get("Text") == query]


def demo_texts(request: Any) -> list[str]:
    return [b["Text"] for b in transcript_blocks(request.text())[:-1] if b.get("Text") and b.get("Intent")]


# ----------------------------------------------------------------------------------------------------
# retrieval and per-call demos

def test_compiling_a_plain_program_wraps_a_copy_of_it():
    student = hn.Predict(ContractClassify)
    with hn.context(lm=fake_lm()):
        compiled = KNNFewShot(k=3).compile(student, trainset=contract_examples())
        assert isinstance(compiled, KNNProgram)
        assert compiled.program is not student
        assert [name for name, _ in compiled.named_predictors()] == ["program"]
        assert compiled(text="my pin got blocked").intent == "pin_blocked"
    assert student.demos == [] and compiled.program.demos == []


def test_demos_are_the_nearest_examples_closest_last():
    trainset = contract_examples()
    lm = fake_lm()
    query = "my pin is blocked after three tries"  # trainset[8] itself
    with hn.context(lm=lm):
        knn = KNNFewShot(k=4).compile(hn.Predict(ContractClassify), trainset=trainset)
        neighbours = knn.retrieve([{"text": query}])[0]
        knn(text=query)
    scores = [n.score for n in neighbours]
    assert scores == sorted(scores, reverse=True) and len(neighbours) == 4
    assert neighbours[0].example == 8 and scores[0] == pytest.approx(1.0, abs=1e-4)
    assert {trainset[n.example].intent for n in neighbours[:3]} == {"pin_blocked"}
    [request] = query_requests(lm, query)
    assert demo_texts(request) == [trainset[n.example].text for n in reversed(neighbours)]
    assert demo_texts(request)[-1] == query


def test_per_call_demos_follow_the_query_and_threads_do_not_mix(bow):
    trainset = contract_examples()
    seen: dict[str, set[tuple[str, ...]]] = {}
    lock = threading.Lock()
    answer = nearest_demo_responder("Text", "Intent")

    def responder(request: Any) -> Any:
        query = transcript_blocks(request.text())[-1].get("Text")
        with lock:
            seen.setdefault(query, set()).add(tuple(demo_texts(request)))
        time.sleep(0.001)  # let the threads interleave
        return answer(request)

    queries = [f"{w} {t}" for w in ("hello", "please", "urgent") for t, _ in
               [(e.text, e.intent) for e in trainset]]
    devset = [hn.Example(text=q, intent=trainset[i % len(trainset)].intent).with_inputs("text")
              for i, q in enumerate(queries)]
    with hn.context(lm=FakeLM(responder=responder, scoring=True)):
        knn = KNNFewShot(k=3, embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset)
        expected = {q: tuple(trainset[n.example].text for n in reversed(ns))
                    for q, ns in zip(queries, knn.retrieve([{"text": q} for q in queries]))}
        result = hn.Evaluate(devset=devset, metric=intent_match, num_threads=4)(knn)
    assert result.n_errors == 0
    assert len(set(expected.values())) > 3, "different queries retrieve different demos"
    for query in queries:
        assert seen[query] == {expected[query]}
    assert knn.program.demos == []


def test_batch_retrieves_once_and_matches_single_calls(bow):
    trainset = contract_examples()
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(k=3, embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset)
        inputs = [{"text": "pin blocked again"}, {"text": "card arrival time"}, {"text": "exchange rate euros"}]
        calls = bow.calls
        batched = knn.batch(inputs, num_threads=2)
        assert bow.calls == calls + 1
        assert [p.intent for p in batched] == [knn(**x).intent for x in inputs]
        assert [p.intent for p in batched] == ["pin_blocked", "card_arrival", "exchange_rate"]


def test_other_predictors_keep_their_own_demos(bow):
    class TwoStep(hn.Module):
        def __init__(self) -> None:
            self.classify = hn.Predict(ContractClassify)
            self.summarize = hn.Predict("text -> summary")

        def forward(self, text: str) -> Any:
            self.summarize(text=text)
            return self.classify(text=text)

    student = TwoStep()
    student.summarize.demos = [{"text": "a demo", "summary": "kept"}]
    seen = []

    def responder(request: Any) -> Any:
        seen.append(request.text())
        return nearest_demo_responder("Text", "Intent")(request) if request.choices else "short"

    with hn.context(lm=FakeLM(responder=responder, scoring=True)):
        knn = KNNFewShot(k=2, embedder=bow).compile(student, trainset=contract_examples())
        assert knn(text="pin blocked").intent == "pin_blocked"
    summary_prompt = next(t for t in seen if "Summary:" in t)
    assert "Summary: kept" in summary_prompt


def test_k_larger_than_the_trainset_uses_all_and_says_so(bow):
    trainset = contract_examples()[:5]
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(k=8, embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset)
    assert len(knn.retrieve([{"text": "card"}])[0]) == 5
    assert any("k=8 but the trainset has only 5" in note for note in knn.compile_record.notes)


def test_duplicate_texts_are_dropped_and_counted(bow):
    trainset = contract_examples()
    extra = [trainset[0], trainset[1].copy(intent="pin_blocked"), trainset[0]]
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(k=3, embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset + extra)
    assert len(knn.state) == len(trainset)
    assert knn.state.sources == list(range(len(trainset)))
    assert any("3 training example(s) repeat" in n and "1 of them with different labels" in n
               for n in knn.compile_record.notes)


def test_trainset_in_the_constructor_or_in_compile(bow):
    trainset = contract_examples()
    with hn.context(lm=fake_lm()):
        a = KNNFewShot(k=2, trainset=trainset, embedder=bow).compile(hn.Predict(ContractClassify))
        b = KNNFewShot(k=2, trainset=trainset[:4], embedder=bow).compile(hn.Predict(ContractClassify),
                                                                         trainset=trainset)
    assert len(a.state) == len(b.state) == len(trainset)
    with pytest.raises(OptimizerError, match="needs a trainset"):
        KNNFewShot(k=2, embedder=bow).compile(hn.Predict(ContractClassify))


def test_recompiling_a_knn_program_rebuilds_it(bow):
    trainset = contract_examples()
    with hn.context(lm=fake_lm()):
        first = KNNFewShot(k=2, embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset[:6])
        second = KNNFewShot(k=2, embedder=bow).compile(first, trainset=trainset)
    assert isinstance(second.program, hn.Predict) and len(second.state) == len(trainset)
    assert len(first.state) == 6


def test_an_uncompiled_knn_program_says_how_to_compile_it():
    with pytest.raises(ConfigurationError, match="compile it with"):
        KNNProgram(hn.Predict(ContractClassify))(text="hello")
    with pytest.raises(TypeError, match="already a KNNProgram"):
        KNNProgram(KNNProgram(hn.Predict(ContractClassify)))


# ----------------------------------------------------------------------------------------------------
# bootstrapping: once, at compile time

def cot_responder(request: Any) -> Any:
    """Reasoning: names the nearest demo's intent; the intent: that one."""
    if request.choices:
        return nearest_demo_responder("Text", "Intent")(request)
    query = transcript_blocks(request.text())[-1].get("Text", "")
    return f"the query is about {query.split()[0]}"


def test_bootstrap_runs_the_teacher_once_per_example_at_compile_time(bow):
    trainset = contract_examples()
    lm = FakeLM(responder=cot_responder, scoring=True)
    with hn.context(lm=lm):
        knn = KNNFewShot(k=3, embedder=bow, bootstrap=True, metric=intent_match).compile(
            hn.ChainOfThought(ContractClassify), trainset=trainset)
        compile_calls = len(lm.requests)
        record = knn.compile_record
        assert 0 < record.calls == compile_calls
        used = next(n for n in record.notes if n.startswith("bootstrapped"))
        before = len(lm.requests)
        prediction = knn(text="my pin is blocked, help")
        serving_calls = len(lm.requests) - before
    assert prediction.intent == "pin_blocked"
    # serving: one generation (reasoning) and the choice scoring (+ its calibration), never a bootstrap
    assert serving_calls <= 3
    bootstrapped = [d for demos in knn.state.demos for d in demos.get("predict", []) if d["_source"] == "bootstrap"]
    assert bootstrapped, used
    for demo in bootstrapped:
        assert demo["reasoning"].startswith("the query is about")
        assert set(demo) >= {"text", "reasoning", "intent", "_example"}
        assert trainset[demo["_example"]].text == demo["text"]


def test_bootstrap_leaves_each_example_out_of_its_own_demos(bow):
    trainset = contract_examples()
    lm = FakeLM(responder=cot_responder, scoring=True)
    with hn.context(lm=lm):
        KNNFewShot(k=3, embedder=bow, bootstrap=True).compile(hn.ChainOfThought(ContractClassify),
                                                             trainset=trainset)
    for example in trainset:
        for request in query_requests(lm, example.text):
            assert example.text not in demo_texts(request)


def test_failed_bootstraps_keep_their_labelled_demos(bow):
    trainset = contract_examples()
    with hn.context(lm=FakeLM(responder=cot_responder, scoring=True)):
        knn = KNNFewShot(k=3, embedder=bow, bootstrap=True, metric=lambda e, p, t=None: e.intent == "pin_blocked"
                         ).compile(hn.ChainOfThought(ContractClassify), trainset=trainset)
    sources = [d["_source"] for demos in knn.state.demos for d in demos["predict"]]
    assert sources.count("bootstrap") == 4 and sources.count("labeled") == 8
    assert any("8 failed" in n for n in knn.compile_record.notes)


def test_bootstrap_args_are_checked():
    with pytest.raises(OptimizerError, match="k sets how many demos"):
        KNNFewShot(bootstrap=True, few_shot_bootstrap_args={"max_bootstrapped_demos": 4})
    with pytest.raises(OptimizerError, match="only with bootstrap=True"):
        KNNFewShot(few_shot_bootstrap_args={"max_rounds": 2})
    KNNFewShot(bootstrap=True, few_shot_bootstrap_args={"max_rounds": 2, "metric_threshold": 0.5})


# ----------------------------------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_input_is_named_by_index(bow, value):
    trainset = contract_examples()
    trainset[5] = trainset[5].copy(text=value)
    with pytest.raises(OptimizerError, match=r"trainset\[5\]: input field 'text' is empty"):
        KNNFewShot(embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset)


def test_a_missing_input_is_named_by_index(bow):
    class Free(hn.Module):
        def __init__(self) -> None:
            self.predict = hn.Predict(ContractClassify)

        def forward(self, **inputs: Any) -> Any:
            return self.predict(**inputs)

    trainset = contract_examples()
    trainset[3] = hn.Example(question="no text", intent="card_arrival").with_inputs("question")
    with pytest.raises(OptimizerError, match=r"trainset\[3\]"):
        KNNFewShot(embedder=bow).compile(hn.Predict(ContractClassify), trainset=trainset)
    with pytest.raises(OptimizerError, match="different input keys"):
        KNNFewShot(embedder=bow).compile(Free(), trainset=trainset)


@pytest.mark.parametrize("k", [0, -1, "8", 2.5, True])
def test_bad_k_is_refused(k):
    with pytest.raises(OptimizerError, match="k must be a positive integer"):
        KNNFewShot(k=k)


def test_bad_index_is_refused(bow):
    with pytest.raises(OptimizerError, match="FAISS cannot build index 'NotAnIndex'"):
        KNNFewShot(embedder=bow, index="NotAnIndex").compile(hn.Predict(ContractClassify),
                                                           trainset=contract_examples())
    with pytest.raises(OptimizerError, match="only 12 training vectors"):
        KNNFewShot(embedder=bow, index="IVF64,Flat").compile(hn.Predict(ContractClassify),
                                                           trainset=contract_examples())


def test_a_query_missing_an_input_is_an_input_error(bow):
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(embedder=bow).compile(hn.Predict(ContractClassify), trainset=contract_examples())
        with pytest.raises(hn.InputError, match="missing input field"):
            knn(question="hello")


def test_a_knn_program_names_its_inputs_like_the_program_it_wraps(bow):
    from honing.modules import program_inputs

    assert program_inputs(KNNProgram(hn.Predict(ContractClassify))) == ["text"]
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(embedder=bow).compile(hn.Predict(ContractClassify), trainset=contract_examples())
        with pytest.raises(TypeError, match="keyword arguments only"):
            knn("my pin is blocked")


def test_auto_decoding_is_compiled_without_calibration(bow):
    student = hn.Predict(ContractClassify)
    explicit = hn.Predict(ContractClassify, decoding="calibrated")
    with hn.context(lm=fake_lm()):
        knn = KNNFewShot(embedder=bow).compile(student, trainset=contract_examples())
        kept = KNNFewShot(embedder=bow).compile(explicit, trainset=contract_examples())
    assert knn.program.decoding == "score" and student.decoding == "auto"
    assert any("decoding 'auto' -> 'score'" in note for note in knn.compile_record.notes)
    assert kept.program.decoding == "calibrated"
