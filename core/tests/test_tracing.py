"""Traces: every predictor call inside ``with hn.trace()``, with dotted names, inputs and outputs."""

import threading

import pytest

import honing as hn
from honing import settings, tracing
from honing.testing.fake import FakeLM


class Pipeline(hn.Module):
    def __init__(self):
        self.steps = [hn.Predict("text -> summary"), hn.Predict("text -> summary")]
        self.classify = hn.ChainOfThought("summary -> label: Literal['good', 'bad']")

    def forward(self, text):
        for step in self.steps:
            text = step(text=text).summary
        return self.classify(summary=text)


def echo_lm():
    """Answers with the last input value, upper-cased; 'good' for the label, 'why' for reasoning."""

    def respond(request):
        last_line = request.prompt.splitlines()[-1]
        if last_line.startswith("Reasoning:"):
            return "why"
        if last_line.startswith("Label:"):
            return "good"
        value = request.prompt.split("\n\n")[-1].splitlines()[0].split(": ", 1)[1]
        return value.upper() + "!"

    return FakeLM(responder=respond)


def test_trace_records_every_predictor_call_with_dotted_names():
    with hn.context(lm=echo_lm()), hn.trace() as t:
        out = Pipeline()(text="abc")
    assert out.label == "good"
    assert [r.predictor_name for r in t] == ["steps.0", "steps.1", "classify.predict"]
    records = t.records
    assert records[0].inputs == {"text": "abc"} and records[0].outputs == {"summary": "ABC!"}
    assert records[1].inputs == {"text": "ABC!"} and records[1].outputs == {"summary": "ABC!!"}
    assert records[2].inputs == {"summary": "ABC!!"}
    assert records[2].outputs == {"reasoning": "why", "label": "good"}
    assert len(t) == 3


def test_trace_record_points_at_the_predictor_object_and_makes_demos():
    program = Pipeline()
    with hn.context(lm=echo_lm()), hn.trace() as t:
        program(text="x")
    assert t.records[0].predictor is program.steps[0]
    assert t.records[2].predictor is program.classify.predict
    assert t.records[0].as_demo() == {"text": "x", "summary": "X!"}


def test_a_bare_predict_is_traced_as_self():
    with hn.trace() as t:
        hn.Predict("q -> a", lm=FakeLM(["y"]))(q="x")
    assert [(r.predictor_name, r.inputs, r.outputs) for r in t] == [("self", {"q": "x"}, {"a": "y"})]


def test_traced_inputs_are_the_coerced_values():
    with hn.trace() as t:
        hn.Predict("n: int -> a: int", lm=FakeLM(["3"]))(n="2")
    assert t.records[0].inputs == {"n": 2} and t.records[0].outputs == {"a": 3}


def test_no_trace_no_records_and_calls_outside_the_block_are_not_recorded():
    predict = hn.Predict("q -> a", lm=FakeLM(["1", "2", "3"]))
    predict(q="before")
    with hn.trace() as t:
        predict(q="inside")
    predict(q="after")
    assert [r.inputs["q"] for r in t] == ["inside"]
    assert settings.current().trace_stack == ()


def test_failed_calls_are_not_recorded():
    predict = hn.Predict("q -> a: int", lm=FakeLM(["not a number"]))
    with hn.trace() as t:
        with pytest.raises(hn.ParseError):
            predict(q="x")
    assert len(t) == 0


def test_nested_traces_each_see_the_calls_inside_them():
    predict = hn.Predict("q -> a", lm=FakeLM(responder=lambda r: "ok"))
    with hn.trace() as outer:
        predict(q="1")
        with hn.trace() as inner:
            predict(q="2")
        predict(q="3")
    assert [r.inputs["q"] for r in outer] == ["1", "2", "3"]
    assert [r.inputs["q"] for r in inner] == ["2"]


def test_trace_is_bounded_and_keeps_the_newest():
    predict = hn.Predict("q -> a", lm=FakeLM(responder=lambda r: "ok"))
    with hn.trace(max_records=3) as t:
        for i in range(5):
            predict(q=str(i))
    assert [r.inputs["q"] for r in t] == ["2", "3", "4"]


def test_trace_follows_into_honing_threads():
    predict = hn.Predict("q -> a", lm=FakeLM(responder=lambda r: "ok"))
    with hn.trace() as t:
        list(settings.map_in_threads(lambda i: predict(q=str(i)), range(12), 4))
    assert sorted(int(r.inputs["q"]) for r in t) == list(range(12))


def test_trace_records_names_relative_to_the_program_in_worker_threads():
    class Parallel(hn.Module):
        def __init__(self):
            self.workers = [hn.Predict("q -> a"), hn.Predict("q -> a")]

        def forward(self, q):
            futures = settings.map_in_threads(lambda w: w(q=q).a, self.workers, 2)
            return hn.Prediction(a=[f.result() for f in futures])

    with hn.context(lm=FakeLM(responder=lambda r: "ok")), hn.trace() as t:
        Parallel()(q="x")
    assert sorted(r.predictor_name for r in t) == ["workers.0", "workers.1"]


def test_traces_in_separate_threads_do_not_mix():
    predict = hn.Predict("q -> a", lm=FakeLM(responder=lambda r: "ok"))
    barrier = threading.Barrier(4)
    results = {}

    def worker(tid):
        with hn.trace() as t:
            barrier.wait(5)
            for i in range(10):
                predict(q=f"{tid}-{i}")
        results[tid] = [r.inputs["q"] for r in t]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for tid in range(4):
        assert results[tid] == [f"{tid}-{i}" for i in range(10)]


def test_evaluate_calls_are_traced():
    dev = [hn.Example(q=str(i), a="ok").with_inputs("q") for i in range(5)]
    predict = hn.Predict("q -> a", lm=FakeLM(responder=lambda r: "ok"))
    with hn.trace() as t:
        hn.Evaluate(devset=dev, metric=hn.metrics.exact_match, num_threads=3)(predict)
    assert sorted(r.inputs["q"] for r in t) == [str(i) for i in range(5)]


def test_record_call_without_trace_is_a_no_op():
    tracing.record_call("self", object(), {"q": 1}, {"a": 2})  # must not raise
    t = tracing.Trace()
    t.add(tracing.TraceRecord("x", None, {"q": 1}, {"a": 2}))
    assert t.records[0].as_demo() == {"q": 1, "a": 2}
