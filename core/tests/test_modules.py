"""Modules: predictor discovery and names, copies, reset, Predict's contract, ChainOfThought."""

import pytest

import honing as hn
from honing.errors import ConfigurationError, InputError, SignatureError
from honing.modules import as_example, program_inputs
from honing.testing.fake import FakeLM


class Hop(hn.Module):
    def __init__(self):
        self.generate = hn.Predict("context, question -> query")

    def forward(self, context, question):
        return self.generate(context=context, question=question)


class MultiHop(hn.Module):
    def __init__(self, lm=None):
        self.hops = [Hop(), Hop()]
        self.tools = {"rewrite": hn.Predict("text -> text_out")}
        self.answer = hn.ChainOfThought("context, question -> answer", lm=lm)
        self.alias = self.answer  # the same object again: found once, under its first name

    def forward(self, question):
        context = ""
        for hop in self.hops:
            context += " " + hop(context=context, question=question).query
        rewritten = self.tools["rewrite"](text=question).text_out
        return self.answer(context=context, question=rewritten)


EXPECTED_NAMES = ["hops.0.generate", "hops.1.generate", "tools.rewrite", "answer.predict"]


# -- discovery -------------------------------------------------------------------------------------

def test_named_predictors_have_stable_dotted_names():
    program = MultiHop()
    assert [name for name, _ in program.named_predictors()] == EXPECTED_NAMES
    assert [name for name, _ in MultiHop().named_predictors()] == EXPECTED_NAMES
    assert program.predictors() == [p for _, p in program.named_predictors()]
    assert all(isinstance(p, hn.Predict) for p in program.predictors())
    assert program.named_predictors()[0][1] is program.hops[0].generate


def test_a_bare_predict_is_named_self():
    predict = hn.Predict("q -> a")
    assert predict.named_predictors() == [("self", predict)]


def test_a_bare_chain_of_thought_is_named_predict():
    cot = hn.ChainOfThought("q -> a")
    assert [n for n, _ in cot.named_predictors()] == ["predict"]


def test_tuples_and_nested_lists():
    class Grid(hn.Module):
        def __init__(self):
            self.rows = ([hn.Predict("a -> b")], [hn.Predict("a -> b"), hn.Predict("a -> b")])

    assert [n for n, _ in Grid().named_predictors()] == ["rows.0.0", "rows.1.0", "rows.1.1"]


def test_module_cycles_do_not_loop_forever():
    class Loop(hn.Module):
        def __init__(self):
            self.me = self
            self.p = hn.Predict("a -> b")
            self.p_again = [self.p, self]

    program = Loop()
    assert [n for n, _ in program.named_predictors()] == ["p"]
    assert [n for n, _ in program.named_submodules()] == ["self", "p"]


def test_container_cycles_do_not_loop_forever():
    class Loop(hn.Module):
        def __init__(self):
            self.items = []
            self.items.append(self.items)
            self.p = hn.Predict("a -> b")

    assert [n for n, _ in Loop().named_predictors()] == ["p"]


def test_named_submodules():
    program = MultiHop()
    names = [n for n, _ in program.named_submodules()]
    assert names[0] == "self"
    assert {"hops.0", "hops.0.generate", "hops.1", "tools.rewrite", "answer", "answer.predict"} <= set(names)
    assert names.count("answer") == 1 and "alias" not in names


def test_forward_must_be_defined():
    class Empty(hn.Module):
        pass

    with pytest.raises(NotImplementedError, match="Empty"):
        Empty()()


# -- deepcopy and reset -----------------------------------------------------------------------------

def test_deepcopy_shares_lms_and_copies_everything_else():
    lm = FakeLM(["x"])
    program = MultiHop(lm=lm)
    program.hops[0].generate.demos = [{"context": "c", "question": "q", "query": "y"}]
    clone = program.deepcopy()
    assert clone is not program
    assert clone.answer.predict.lm is lm
    assert clone.hops[0].generate is not program.hops[0].generate
    assert clone.hops[0].generate.demos == program.hops[0].generate.demos
    assert clone.hops[0].generate.demos is not program.hops[0].generate.demos
    assert clone.alias is clone.answer  # aliasing is preserved inside the copy
    assert [n for n, _ in clone.named_predictors()] == EXPECTED_NAMES
    clone.hops[0].generate.demos.append({"context": "c2", "question": "q2", "query": "y2"})
    clone.hops[1].generate.signature = clone.hops[1].generate.signature.with_instructions("New.")
    assert len(program.hops[0].generate.demos) == 1
    assert program.hops[1].generate.signature.instructions != "New."


def test_deepcopy_shares_lms_of_different_predictors():
    lm1, lm2 = FakeLM(), FakeLM()
    program = MultiHop(lm=lm1)
    program.tools["rewrite"].lm = lm2
    clone = program.deepcopy()
    assert clone.answer.predict.lm is lm1
    assert clone.tools["rewrite"].lm is lm2
    assert clone.hops[0].generate.lm is None


def test_deepcopy_shares_an_lm_held_by_the_module_itself():
    class Judged(hn.Module):
        def __init__(self, judge_lm):
            self.judge_lm = judge_lm
            self.predict = hn.Predict("q -> a")

    lm = FakeLM()
    clone = Judged(lm).deepcopy()
    assert clone.judge_lm is lm


def test_reset_clears_demos_and_compile_record_in_place():
    program = MultiHop()
    for p in program.predictors():
        p.demos = [{"question": "q"}]
    program.compile_record = object()
    assert program.reset() is program
    assert all(p.demos == [] for p in program.predictors())
    assert program.compile_record is None


# -- Predict ---------------------------------------------------------------------------------------

def test_predict_owns_signature_demos_and_lm():
    lm = FakeLM()
    predict = hn.Predict("q -> a", lm=lm)
    assert predict.signature == hn.Predict("q: str -> a: str").signature
    assert [f.name for f in predict.signature.fields] == ["q", "a"]
    assert predict.demos == []
    assert predict.lm is lm
    assert hn.Predict("q -> a").lm is None


def test_predict_rejects_training_arguments_pointing_to_bootstrap_finetune():
    with pytest.raises(TypeError) as info:
        hn.Predict("q -> a", optimizer="adam", learning_rate=1e-4)
    message = str(info.value)
    assert "BootstrapFinetune" in message
    assert ".compile(" in message
    assert "optimizer" in message and "learning_rate" in message


def test_chain_of_thought_also_rejects_training_arguments():
    with pytest.raises(TypeError, match="BootstrapFinetune"):
        hn.ChainOfThought("q -> a", epochs=3)


def test_predict_rejects_unknown_keywords_and_bad_decoding():
    with pytest.raises(TypeError, match="frobnicate"):
        hn.Predict("q -> a", frobnicate=True)
    with pytest.raises(ValueError, match="decoding"):
        hn.Predict("q -> a", decoding="beam")
    with pytest.raises(SignatureError):
        hn.Predict("no arrow here")


def test_predict_call_returns_a_typed_prediction():
    lm = FakeLM(["8"])
    pred = hn.Predict("a: int, b: int -> sum: int", lm=lm)(a=3, b=5)
    assert isinstance(pred, hn.Prediction)
    assert pred.sum == 8 and isinstance(pred.sum, int)
    assert pred.meta["raw"] == {"sum": "8"}
    assert len(lm.requests) == 1
    assert "A: 3" in lm.requests[0].prompt and "B: 5" in lm.requests[0].prompt


def test_predict_takes_keyword_arguments_only():
    with pytest.raises(TypeError, match="keyword"):
        hn.Predict("q -> a", lm=FakeLM(["x"]))("positional")


def test_predict_uses_the_context_lm_and_its_own_lm_wins():
    context_lm, own_lm = FakeLM(["from context"]), FakeLM(["from predictor"])
    with hn.context(lm=context_lm):
        assert hn.Predict("q -> a")(q="x").a == "from context"
        assert hn.Predict("q -> a", lm=own_lm)(q="x").a == "from predictor"
    assert len(context_lm.requests) == 1 and len(own_lm.requests) == 1


def test_no_lm_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no LM configured"):
        hn.Predict("q -> a")(q="x")


def test_missing_input_is_an_input_error_naming_field_and_predictor():
    lm = FakeLM(["x"])
    with pytest.raises(InputError, match=r"missing input field\(s\) 'b'.*'self'"):
        hn.Predict("a, b -> c", lm=lm)(a="1")
    assert lm.requests == []


def test_extra_input_is_an_input_error_naming_field():
    with pytest.raises(InputError, match=r"unexpected input field\(s\) 'z'"):
        hn.Predict("a -> c", lm=FakeLM(["x"]))(a="1", z="2")


def test_wrong_input_type_is_an_input_error_naming_field():
    with pytest.raises(InputError, match="'count' expects int"):
        hn.Predict("count: int -> c", lm=FakeLM(["x"]))(count="many")


def test_input_errors_inside_a_program_name_the_dotted_predictor():
    program = MultiHop(lm=FakeLM(responder=lambda r: "x"))
    program.hops[1].forward = lambda context, question: program.hops[1].generate(context=context)
    with hn.context(lm=FakeLM(responder=lambda r: "x")):
        with pytest.raises(InputError, match="'hops.1.generate'"):
            program(question="q")


def test_inputs_are_coerced_before_the_call():
    lm = FakeLM(["ok"])
    hn.Predict("n: int, x: float -> a", lm=lm)(n="7", x=2)
    assert "N: 7\nX: 2.0" in lm.requests[0].prompt


def test_adapter_can_be_chosen_per_predictor_by_name():
    lm = FakeLM(["<a>chat reply</a>"])
    pred = hn.Predict("q -> a", lm=lm, adapter="chat")(q="x")
    assert pred.a == "chat reply"
    assert lm.requests[0].messages is not None


def test_demos_reach_the_prompt():
    lm = FakeLM(["4"])
    predict = hn.Predict("question -> answer", lm=lm)
    predict.demos = [{"question": "1+1?", "answer": "2"}]
    predict(question="2+2?")
    prompt = lm.requests[0].prompt
    assert prompt.index("Question: 1+1?\nAnswer: 2") < prompt.index("Question: 2+2?")


# -- ChainOfThought --------------------------------------------------------------------------------

def test_chain_of_thought_adds_reasoning_before_the_outputs():
    cot = hn.ChainOfThought("question -> answer, confidence: float", reasoning_desc="think it through")
    sig = cot.predict.signature
    assert [f.name for f in sig.output_fields] == ["reasoning", "answer", "confidence"]
    assert [f.name for f in sig.input_fields] == ["question"]
    assert sig.output_fields[0].desc == "think it through"
    assert sig.output_fields[0].annotation is str


def test_chain_of_thought_returns_reasoning_and_answer():
    replies = iter(["2 plus 2 makes 4", "4"])
    lm = FakeLM(responder=lambda r: next(replies))
    pred = hn.ChainOfThought("question -> answer: int", lm=lm)(question="2+2?")
    assert pred.reasoning == "2 plus 2 makes 4"
    assert pred.answer == 4
    assert lm.requests[0].prompt.endswith("Reasoning:")
    assert lm.requests[1].prompt.endswith("Reasoning: 2 plus 2 makes 4\nAnswer:")


def test_chain_of_thought_keeps_an_existing_reasoning_field_once():
    cot = hn.ChainOfThought("q -> reasoning, a")
    assert [f.name for f in cot.predict.signature.output_fields] == ["reasoning", "a"]


def test_full_program_runs_with_a_fake_lm():
    lm = FakeLM(responder=lambda r: "answer text")
    with hn.context(lm=lm):
        out = MultiHop()(question="who?")
    assert out.answer == "answer text" and out.reasoning == "answer text"
    # 2 hops + rewrite + reasoning + answer
    assert len(lm.requests) == 5


# -- helpers ---------------------------------------------------------------------------------------

def test_program_inputs():
    assert program_inputs(hn.Predict("a, b -> c")) == ["a", "b"]
    assert program_inputs(hn.ChainOfThought("x -> y")) == ["x"]
    assert program_inputs(MultiHop()) == ["question"]

    class Flexible(hn.Module):
        def forward(self, **kwargs):
            return kwargs

    assert program_inputs(Flexible()) is None


def test_as_example():
    ex = hn.Example(a=1).with_inputs("a")
    assert as_example(ex) is ex
    with pytest.raises(InputError, match="example 3"):
        as_example({"a": 1}, index=3)
