"""Evaluate: scores in [0, 1], per-example errors, max_errors, threads, usage."""

import re
import threading

import pytest

import honing as hn
from honing import settings
from honing.errors import InputError, TooManyErrors
from honing.evaluate import EvaluationResult, metric_score
from honing.metrics import exact_match
from honing.testing.fake import FakeLM

ADD = "a: int, b: int -> sum: int"


def adder_lm(wrong=(), garbage=()):
    """Adds A and B; answers wrongly for `a` in `wrong` and unparseably for `a` in `garbage`."""

    def respond(request):
        a = int(re.findall(r"^A: (-?\d+)$", request.prompt, re.M)[-1])
        b = int(re.findall(r"^B: (-?\d+)$", request.prompt, re.M)[-1])
        if a in garbage:
            return "no idea"
        return str(a + b + (1 if a in wrong else 0))

    return FakeLM(responder=respond)


def devset(n=10):
    return [hn.Example(a=i, b=2 * i, sum=3 * i).with_inputs("a", "b") for i in range(n)]


def test_score_is_the_fraction_of_passing_examples():
    program = hn.Predict(ADD, lm=adder_lm(wrong={1, 4, 7}))
    result = hn.Evaluate(devset=devset(10), metric=exact_match)(program)
    assert isinstance(result, EvaluationResult)
    assert result.score == pytest.approx(0.7)
    assert result.n_errors == 0
    assert [r.index for r in result.results] == list(range(10))
    assert [r.score for r in result.results] == [0.0 if i in {1, 4, 7} else 1.0 for i in range(10)]
    assert result.results[3].prediction.sum == 9
    assert result.results[3].example == devset(10)[3]
    assert result.errors == []


def test_float_metric_scores_are_averaged():
    program = hn.Predict(ADD, lm=adder_lm())
    result = hn.Evaluate(devset=devset(4), metric=lambda ex, pred: 0.25 * ex.a)(program)
    assert result.score == pytest.approx((0 + 0.25 + 0.5 + 0.75) / 4)


def test_a_failing_example_scores_zero_and_keeps_its_error():
    program = hn.Predict(ADD, lm=adder_lm(garbage={2}))
    result = hn.Evaluate(devset=devset(5), metric=exact_match)(program)
    assert result.score == pytest.approx(0.8)
    assert result.n_errors == 1
    failed = result.results[2]
    assert failed.score == 0.0 and failed.prediction is None
    assert "ParseError" in failed.error and "'sum'" in failed.error and "no idea" in failed.error
    assert result.errors == [failed]


def test_failure_score_is_configurable():
    program = hn.Predict(ADD, lm=adder_lm(garbage={0}))
    result = hn.Evaluate(devset=devset(2), metric=exact_match, failure_score=0.5)(program)
    assert result.results[0].score == 0.5 and result.score == pytest.approx(0.75)


def test_max_errors_tolerates_that_many_failures():
    program = hn.Predict(ADD, lm=adder_lm(garbage={1, 3}))
    result = hn.Evaluate(devset=devset(6), metric=exact_match, max_errors=2)(program)
    assert result.n_errors == 2
    assert result.score == pytest.approx(4 / 6)


def test_one_failure_more_raises_too_many_errors_with_the_partial_result():
    program = hn.Predict(ADD, lm=adder_lm(garbage={1, 3}))
    with pytest.raises(TooManyErrors) as info:
        hn.Evaluate(devset=devset(6), metric=exact_match, max_errors=1)(program)
    partial = info.value.partial
    assert isinstance(partial, EvaluationResult)
    assert partial.n_errors == 2
    assert [r.index for r in partial.results] == [0, 1, 2, 3]
    assert partial.results[0].score == 1.0 and partial.results[1].error is not None
    assert "max_errors=1" in str(info.value)


def test_max_errors_zero_stops_at_the_first_failure():
    with pytest.raises(TooManyErrors):
        hn.Evaluate(devset=devset(3), metric=exact_match, max_errors=0)(
            hn.Predict(ADD, lm=adder_lm(garbage={2})))


def test_max_errors_default_comes_from_the_settings():
    program = hn.Predict(ADD, lm=adder_lm(garbage={0}))
    with hn.context(max_errors=0):
        with pytest.raises(TooManyErrors):
            hn.Evaluate(devset=devset(2), metric=exact_match)(program)
    assert hn.Evaluate(devset=devset(2), metric=exact_match)(program).n_errors == 1


def test_too_many_errors_with_threads_carries_finished_results():
    program = hn.Predict(ADD, lm=adder_lm(garbage=set(range(0, 20, 2))))
    with pytest.raises(TooManyErrors) as info:
        hn.Evaluate(devset=devset(20), metric=exact_match, num_threads=4, max_errors=3)(program)
    partial = info.value.partial
    assert partial.n_errors == 4
    indexes = [r.index for r in partial.results]
    assert indexes == sorted(indexes) and len(indexes) >= 4


@pytest.mark.parametrize("example, field, kind", [
    (hn.Example(a=1, sum=2).with_inputs("a"), "'b'", "missing"),
    (hn.Example(a=1, b=1, c=1, sum=2).with_inputs("a", "b", "c"), "'c'", "unexpected"),
    (hn.Example(a="one", b=1, sum=2).with_inputs("a", "b"), "'a'", "expects int"),
])
def test_input_problems_are_recorded_naming_the_field_and_example(example, field, kind):
    lm = adder_lm()
    result = hn.Evaluate(devset=[devset(1)[0], example], metric=exact_match)(hn.Predict(ADD, lm=lm))
    error = result.results[1].error
    assert field in error and kind in error and "example 1" in error
    assert result.results[0].error is None
    assert len(lm.requests) == 1  # the bad example never reached the LM


def test_input_error_is_an_input_error_when_calling_directly():
    with pytest.raises(InputError):
        hn.Predict(ADD, lm=adder_lm())(a=1)


def test_a_metric_that_raises_is_recorded_naming_the_metric_and_the_index():
    def picky(example, prediction):
        if example.a == 2:
            raise KeyError("missing label")
        return True

    result = hn.Evaluate(devset=devset(4), metric=picky)(hn.Predict(ADD, lm=adder_lm()))
    error = result.results[2].error
    assert "metric" in error and "example 2" in error and "missing label" in error
    assert result.results[2].prediction is not None  # the call itself worked
    assert result.n_errors == 1 and result.score == pytest.approx(0.75)


def test_a_metric_error_names_the_metric_function():
    def my_picky_metric(example, prediction):
        raise RuntimeError("boom")

    result = hn.Evaluate(devset=devset(1), metric=my_picky_metric)(hn.Predict(ADD, lm=adder_lm()))
    assert "my_picky_metric" in result.results[0].error


@pytest.mark.parametrize("value", [None, "yes", float("nan"), [1]])
def test_a_metric_returning_a_non_number_is_an_error(value):
    result = hn.Evaluate(devset=devset(1), metric=lambda e, p: value)(hn.Predict(ADD, lm=adder_lm()))
    assert result.results[0].score == 0.0
    assert "metric" in result.results[0].error and "example 0" in result.results[0].error


def test_score_stays_within_zero_and_one():
    result = hn.Evaluate(devset=devset(2), metric=lambda e, p: 50)(hn.Predict(ADD, lm=adder_lm()))
    assert 0.0 <= result.score <= 1.0


def test_metric_score_converts_bools_and_numbers():
    ex, pred = hn.Example(x=1), hn.Prediction(x=1)
    assert metric_score(lambda e, p: True, ex, pred) == 1.0
    assert metric_score(lambda e, p: False, ex, pred) == 0.0
    assert metric_score(lambda e, p: 1, ex, pred) == 1.0
    assert metric_score(lambda e, p, t: t, ex, pred, trace=0.5) == 0.5
    with pytest.raises(TypeError, match="example 7"):
        metric_score(lambda e, p: None, ex, pred, index=7)


def test_threads_give_the_same_result_and_follow_the_context():
    program = hn.Predict(ADD)  # no LM of its own: the context's LM must reach the worker threads
    threads_used = set()

    def metric(example, prediction):
        threads_used.add(threading.current_thread().name)
        return exact_match(example, prediction)

    with hn.context(lm=adder_lm(wrong={0, 5})):
        serial = hn.Evaluate(devset=devset(12), metric=exact_match, num_threads=1)(program)
        parallel = hn.Evaluate(devset=devset(12), metric=metric, num_threads=4)(program)
    assert parallel.score == serial.score == pytest.approx(10 / 12)
    assert [r.score for r in parallel.results] == [r.score for r in serial.results]
    assert any(name.startswith("honing") for name in threads_used)


def test_num_threads_default_comes_from_the_settings():
    names = set()

    def metric(example, prediction):
        names.add(threading.current_thread().name)
        return True

    with hn.context(num_threads=3):
        hn.Evaluate(devset=devset(6), metric=metric)(hn.Predict(ADD, lm=adder_lm()))
    assert all(n.startswith("honing") for n in names)


def test_usage_sums_every_lm_call():
    lm = adder_lm()
    result = hn.Evaluate(devset=devset(5), metric=exact_match, num_threads=2)(hn.Predict(ADD, lm=lm))
    assert result.usage.calls == 5
    assert result.usage == lm.usage
    assert result.usage.prompt_tokens > 0


def test_configuration_errors_propagate_instead_of_scoring_zero():
    with pytest.raises(hn.ConfigurationError):
        hn.Evaluate(devset=devset(2), metric=exact_match)(hn.Predict(ADD))


def test_budget_exceeded_propagates():
    class Broke(hn.Module):
        def forward(self, a, b):
            raise hn.BudgetExceeded("over budget")

    with pytest.raises(hn.BudgetExceeded):
        hn.Evaluate(devset=devset(2), metric=exact_match)(Broke())


def test_custom_modules_are_evaluated():
    class Doubler(hn.Module):
        def __init__(self):
            self.add = hn.Predict(ADD)

        def forward(self, a, b):
            return self.add(a=a, b=b)

    with hn.context(lm=adder_lm()):
        assert hn.Evaluate(devset=devset(3), metric=exact_match)(Doubler()).score == 1.0


def test_devset_is_validated_up_front():
    with pytest.raises(InputError, match=r"devset\[1\]"):
        hn.Evaluate(devset=[devset(1)[0], {"a": 1}], metric=exact_match)
    with pytest.raises(InputError, match=r"devset\[0\].*with_inputs"):
        hn.Evaluate(devset=[hn.Example(a=1, b=1, sum=2)], metric=exact_match)
    with pytest.raises(TypeError, match="metric"):
        hn.Evaluate(devset=devset(1), metric="exact_match")


def test_empty_devset_scores_zero():
    result = hn.Evaluate(devset=[], metric=exact_match)(hn.Predict(ADD, lm=adder_lm()))
    assert result.score == 0.0 and result.results == () and result.n_errors == 0


def test_display_progress_writes_a_bar(capsys):
    hn.Evaluate(devset=devset(3), metric=exact_match, display_progress=True, desc="my-eval")(
        hn.Predict(ADD, lm=adder_lm()))
    assert "my-eval" in capsys.readouterr().err


def test_no_progress_bar_by_default(capsys):
    hn.Evaluate(devset=devset(3), metric=exact_match, desc="quiet-eval")(hn.Predict(ADD, lm=adder_lm()))
    assert "quiet-eval" not in capsys.readouterr().err


def test_evaluate_leaves_no_settings_behind():
    before = settings.current()
    hn.Evaluate(devset=devset(2), metric=exact_match, num_threads=2)(hn.Predict(ADD, lm=adder_lm()))
    assert settings.current() == before


class Prefetching(hn.Module):
    """Records what Evaluate hands to `prefetch` before the calls."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.add = hn.Predict(ADD)
        self.fail = fail
        self.prefetched: list[list[dict]] = []

    def prefetch(self, inputs):
        self.prefetched.append([dict(x) for x in inputs])
        if self.fail:
            raise RuntimeError("embedding service down")

    def forward(self, a, b):
        return self.add(a=a, b=b)


def test_evaluate_hands_the_whole_devset_to_prefetch_first():
    program = Prefetching()
    with hn.context(lm=adder_lm()):
        result = hn.Evaluate(devset=devset(5), metric=exact_match)(program)
    assert result.score == 1.0
    assert program.prefetched == [[{"a": i, "b": 2 * i} for i in range(5)]]


def test_a_failing_prefetch_does_not_stop_the_evaluation():
    program = Prefetching(fail=True)
    with hn.context(lm=adder_lm()):
        result = hn.Evaluate(devset=devset(5), metric=exact_match)(program)
    assert result.score == 1.0 and len(program.prefetched) == 1
