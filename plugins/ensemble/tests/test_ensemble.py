"""Ensemble: the shared optimizer contract, majority voting, seeded subsets, one-file save/load."""

from __future__ import annotations

import json
from typing import Any

import honing as hn
import pytest
from honing.errors import LoadError, OptimizerError
from honing.testing.contract import ContractClassify, OptimizerContract, contract_examples, intent_match
from honing.testing.fake import FakeLM, nearest_demo_responder
from honing_ensemble import Ensemble, EnsembleProgram, majority
from hypothesis import given, settings
from hypothesis import strategies as st

DEV = [("my card has not arrived yet", "card_arrival"), ("what is the exchange rate today", "exchange_rate"),
       ("my pin got blocked", "pin_blocked"), ("when does the new card arrive", "card_arrival"),
       ("exchange rate for pounds", "exchange_rate"), ("pin is blocked after wrong tries", "pin_blocked")]


def devset() -> list[hn.Example]:
    return [hn.Example(text=t, intent=i).with_inputs("text") for t, i in DEV]


def fake_lm() -> FakeLM:
    return FakeLM(responder=nearest_demo_responder("Text", "Intent"))


def member(*intents: str) -> hn.Predict:
    """A classifier whose demos teach it only `intents` (it answers "unknown" for the others)."""
    program = hn.Predict(ContractClassify)
    program.demos = [{"text": e.text, "intent": e.intent} for e in contract_examples() if e.intent in intents]
    return program


def three_members() -> list[hn.Predict]:
    return [member("card_arrival", "exchange_rate"), member("exchange_rate", "pin_blocked"),
            member("pin_blocked", "card_arrival")]


class TestEnsembleContract(OptimizerContract):
    optimizer_name = "Ensemble"

    def make_lm(self) -> Any:
        return fake_lm()

    def make_optimizer(self, **overrides: Any) -> Ensemble:
        return Ensemble(**{"metric": intent_match, "seed": 0, **overrides})

    def make_student(self) -> EnsembleProgram:
        # the contract hands "a student" around; for an Ensemble that is an EnsembleProgram of the
        # members, which compile re-ensembles (copies) and load fills
        return EnsembleProgram(three_members())


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HONING_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def lm() -> Any:
    lm = fake_lm()
    with hn.context(lm=lm):
        yield lm


def test_majority_votes_per_field_on_normalised_text_ties_to_the_earliest_member():
    votes = [hn.Prediction(intent="Card_Arrival.", note="a"), hn.Prediction(intent="pin_blocked", note="b"),
             hn.Prediction(intent="card_arrival", note="b")]
    result = majority(votes)
    assert result.intent == "Card_Arrival." and result.note == "b"
    assert majority([hn.Prediction(intent="x"), hn.Prediction(intent="y")]).intent == "x"
    assert majority([hn.Prediction(intent="x"), hn.Prediction(intent="y"), hn.Prediction(intent="y")]).intent == "y"
    with pytest.raises(ValueError):
        majority([])


def test_the_ensemble_beats_members_that_each_know_only_part(lm):
    ensemble = Ensemble(metric=intent_match).compile(three_members(), valset=devset())
    record = ensemble.compile_record
    members = [record.scores[f"member_{i}"] for i in range(3)]
    assert record.score == record.scores["ensemble"] == 1.0
    assert record.score >= max(members) and max(members) < 1.0
    assert not any("below its best member" in n for n in record.notes)


def mislabelled() -> hn.Predict:
    """A classifier taught wrong labels (each intent's texts labelled as the next intent)."""
    intents = ["card_arrival", "exchange_rate", "pin_blocked"]
    program = hn.Predict(ContractClassify)
    program.demos = [{"text": e.text, "intent": intents[(intents.index(e.intent) + 1) % 3]}
                     for e in contract_examples() if e.intent in intents]
    return program


@pytest.mark.parametrize("search", ["every combination", "greedy"])
def test_members_that_agree_on_mistakes_are_left_out_so_the_vote_never_loses_to_the_best_member(lm, search,
                                                                                                  monkeypatch):
    if search == "greedy":  # what happens above EXHAUSTIVE_UP_TO members
        monkeypatch.setattr("honing_ensemble.ensemble.EXHAUSTIVE_UP_TO", 0)
    good = member("card_arrival", "exchange_rate", "pin_blocked")
    every = Ensemble(metric=intent_match, select=False).compile([good, mislabelled(), mislabelled()], valset=devset())
    assert every.compile_record.score < every.compile_record.scores["member_0"] == 1.0  # outvoted
    assert any("below its best member" in n for n in every.compile_record.notes)

    before = lm.usage.calls
    chosen = Ensemble(metric=intent_match).compile([good, mislabelled(), mislabelled()], valset=devset())
    record = chosen.compile_record
    assert len(chosen.members) == 1 and chosen.members[0].demos == good.demos
    assert record.score == record.scores["member_0"] == 1.0
    assert any("kept members 0 of 3" in n for n in record.notes), record.notes
    # choosing costs nothing: each member once over the valset, then the one-member ensemble once
    assert lm.usage.calls - before == 3 * len(DEV) + len(DEV)


@pytest.mark.parametrize("search", ["every combination", "greedy"])
def test_selection_keeps_every_member_when_the_vote_helps(lm, search, monkeypatch):
    if search == "greedy":
        monkeypatch.setattr("honing_ensemble.ensemble.EXHAUSTIVE_UP_TO", 0)
    ensemble = Ensemble(metric=intent_match).compile(three_members(), valset=devset())
    assert len(ensemble.members) == 3 and not any("kept members" in n for n in ensemble.compile_record.notes)


def test_compile_takes_a_list_copies_it_and_leaves_it_untouched(lm):
    programs = three_members()
    ensemble = Ensemble().compile(programs)
    assert isinstance(ensemble, EnsembleProgram) and len(ensemble.members) == 3
    assert not {id(p) for p in programs} & {id(p) for p in ensemble.predictors()}
    assert ensemble.compile_record.name == "Ensemble"
    same = Ensemble().compile([programs[0], programs[0]])  # one program twice: two independent members
    assert [n for n, _ in same.named_predictors()] == ["members.0", "members.1"]


def test_bad_programs_are_clear_errors():
    with pytest.raises(OptimizerError, match="takes a list of programs"):
        Ensemble().compile(member("card_arrival"))
    with pytest.raises(OptimizerError, match="list of programs is empty"):
        Ensemble().compile([])
    with pytest.raises(OptimizerError, match=r"programs\[1\] is a str"):
        Ensemble().compile([member("card_arrival"), "not a program"])
    with pytest.raises(OptimizerError, match="size=4 but there are only 3 programs"):
        Ensemble(size=4).compile(three_members())
    with pytest.raises(OptimizerError, match="size must be a positive integer"):
        Ensemble(size=0)
    with pytest.raises(OptimizerError, match="takes no teacher"):
        Ensemble().compile(three_members(), teacher=member("card_arrival"))


def test_members_with_other_inputs_are_refused():
    class Other(hn.Signature):
        """Answer."""

        question: str = hn.InputField()
        intent: str = hn.OutputField()

    with pytest.raises(OptimizerError, match=r"programs\[1\] takes inputs \['question'\]"):
        Ensemble().compile([member("card_arrival"), hn.Predict(Other)])


def test_a_valset_without_the_fields_is_named(lm):
    valset = devset()
    valset[4] = hn.Example(question="rate?", intent="exchange_rate").with_inputs("question")
    with pytest.raises(OptimizerError, match=r"valset\[4\] is missing input field\(s\) 'text'"):
        Ensemble(metric=intent_match).compile(three_members(), valset=valset)


def test_seeded_subsets_deterministic_or_fresh_per_call(lm):
    fixed = Ensemble(size=2, deterministic=True, seed=4).compile(three_members() * 2)
    assert len({tuple(fixed.chosen()) for _ in range(10)}) == 1
    fresh_a = Ensemble(size=2, seed=4).compile(three_members() * 2)
    fresh_b = Ensemble(size=2, seed=4).compile(three_members() * 2)
    draws_a = [tuple(fresh_a.chosen()) for _ in range(10)]
    assert draws_a == [tuple(fresh_b.chosen()) for _ in range(10)]  # seeded (DSPy used the global RNG)
    assert len(set(draws_a)) > 1
    assert all(list(d) == sorted(d) for d in draws_a)  # member order is kept for tie-breaking
    other_seed = Ensemble(size=2, seed=5).compile(three_members() * 2)
    assert [tuple(other_seed.chosen()) for _ in range(10)] != draws_a
    prediction = fixed(text="my pin got blocked")
    assert prediction.meta["ensemble"]["members"] == list(fixed.chosen())


def test_the_whole_ensemble_saves_to_one_file_and_loads_back(lm, tmp_path):
    ensemble = Ensemble(size=2, deterministic=True, seed=9).compile(three_members())
    path = tmp_path / "ensemble.json"
    ensemble.save(path)
    saved = json.loads(path.read_text())
    assert [p["name"] for p in saved["predictors"]] == ["members.0", "members.1", "members.2"]
    assert saved["extra_state"]["self"] == {"n_members": 3, "size": 2, "deterministic": True, "seed": 9,
                                            "reduce_fn": "majority"}
    loaded = EnsembleProgram.like(path, lambda: hn.Predict(ContractClassify))
    assert (loaded.size, loaded.seed, loaded.deterministic) == (2, 9, True)
    assert [p.demos for p in loaded.predictors()] == [p.demos for p in ensemble.predictors()]
    for example in devset():
        assert loaded(**example.inputs()) == ensemble(**example.inputs())
    with pytest.raises(LoadError, match="the file has predictor"):
        EnsembleProgram.like(2, lambda: hn.Predict(ContractClassify)).load(path)


def test_a_custom_reducer_must_be_given_again_to_load(lm, tmp_path):
    def first(predictions):
        return predictions[0]

    ensemble = Ensemble(first).compile(three_members())
    path = tmp_path / "ensemble.json"
    ensemble.save(path)
    with pytest.raises(LoadError, match="reduce_fn=<that function>"):
        EnsembleProgram.like(path, lambda: hn.Predict(ContractClassify))
    loaded = EnsembleProgram.like(path, lambda: hn.Predict(ContractClassify), reduce_fn=first)
    assert loaded.reduce_fn is first


def test_not_an_ensemble_file_is_a_clear_error(lm, tmp_path):
    path = tmp_path / "single.json"
    member("card_arrival").save(path)
    with pytest.raises(LoadError, match="not a saved EnsembleProgram"):
        EnsembleProgram.like(path, lambda: hn.Predict(ContractClassify))


def test_a_failing_member_is_left_out_of_the_vote(lm):
    class Broken(hn.Module):
        def __init__(self) -> None:
            self.predict = hn.Predict(ContractClassify)

        def forward(self, text: str) -> hn.Prediction:
            raise RuntimeError("broken member")

    ensemble = Ensemble().compile([Broken(), member("pin_blocked"), member("pin_blocked")])
    prediction = ensemble(text="my pin got blocked")
    assert prediction.intent == "pin_blocked" and prediction.meta["ensemble"]["failed"] == 1
    with pytest.raises(RuntimeError, match="broken member"):
        Ensemble().compile([Broken()])(text="x")


def test_reduce_fn_none_returns_every_prediction(lm):
    ensemble = Ensemble(None).compile(three_members())
    assert len(ensemble(text="my pin got blocked")) == 3


def test_run_dir_records_members_and_ensemble(lm, tmp_path):
    Ensemble(metric=intent_match).compile(three_members(), valset=devset(), run_dir=tmp_path / "run")
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["key"] for e in events if e["event"] == "candidate"] == ["member_0", "member_1", "member_2", "ensemble"]
    assert events[-1]["event"] == "finish" and "best_member" in events[-1]
    for name in ("summary.json", "summary.txt", "scores.png"):
        assert (tmp_path / "run" / name).exists(), name


def test_a_budget_running_out_while_scoring_returns_the_ensemble_unscored():
    from honing.errors import BudgetExceeded

    calls = {"n": 0}
    responder = nearest_demo_responder("Text", "Intent")

    def limited(request):
        calls["n"] += 1
        if calls["n"] > len(DEV) + 2:
            raise BudgetExceeded("budget: max_calls reached", limit="calls")
        return responder(request)

    with hn.context(lm=FakeLM(responder=limited)):
        ensemble = Ensemble(metric=intent_match).compile(three_members(), valset=devset())
    record = ensemble.compile_record
    assert record.budget_limited and record.score is None and list(record.scores) == ["member_0"]
    assert len(ensemble.members) == 3


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 4), data=st.data(), seed=st.integers(-(2**31), 2**31), deterministic=st.booleans())
def test_extra_state_round_trips(tmp_path_factory, n, data, seed, deterministic):
    size = data.draw(st.one_of(st.none(), st.integers(1, n)))
    ensemble = EnsembleProgram([member("card_arrival") for _ in range(n)], size=size, seed=seed,
                               deterministic=deterministic)
    path = tmp_path_factory.mktemp("rt") / "e.json"
    ensemble.save(path)
    loaded = EnsembleProgram.like(path, lambda: hn.Predict(ContractClassify))
    assert loaded.extra_state() == ensemble.extra_state()
    assert [loaded.chosen() for _ in range(3)] == [ensemble.chosen() for _ in range(3)]


def test_compile_from_the_command_line(tmp_path, monkeypatch, capsys):
    """`honing compile file.py:program --optimizer Ensemble`: the program is an EnsembleProgram whose members
    are re-ensembled (and, with a metric and a valset, chosen) against a real loopback HTTP server."""
    from honing.cli import main
    from honing.testing.server import OpenAICompatServer

    program = tmp_path / "members.py"
    program.write_text(
        "from honing.testing.contract import ContractClassify\n"
        "from honing_ensemble import EnsembleProgram\n"
        "import honing as hn\n"
        "def program():\n"
        "    members = [hn.Predict(ContractClassify) for _ in range(3)]\n"
        "    members[1].signature = members[1].signature.with_instructions('Member one.')\n"
        "    return EnsembleProgram(members)\n")
    rows = "".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in DEV)
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "val.jsonl").write_text(rows)

    def respond(request: dict) -> str:  # member 1 is right; members 0 and 2 agree on a wrong answer
        prompt = " ".join(str(m["content"]) for m in request["messages"])
        query = prompt.rsplit("Text:", 1)[-1].lower()
        right = next(i for t, i in DEV if t in query)
        return right if "Member one." in prompt else "unknown"

    with OpenAICompatServer(responder=respond) as server:
        monkeypatch.setenv("OPENAI_API_BASE", server.url)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        out = tmp_path / "ensemble.json"
        code = main(["compile", f"{program}:program", "--optimizer", "Ensemble", "--trainset",
                     str(tmp_path / "train.jsonl"), "--valset", str(tmp_path / "val.jsonl"), "--metric", "exact_match",
                     "--lm", "openai/test-model", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = json.loads(out.read_text())
    assert saved["extra_state"]["self"]["n_members"] == 1  # the two that agree on mistakes were left out
    assert saved["optimizer"]["name"] == "Ensemble" and saved["optimizer"]["score"] == 1.0
