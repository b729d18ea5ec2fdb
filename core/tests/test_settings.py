"""Settings: process defaults, scoped overrides, and how they follow (or do not follow) into threads."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import honing as hn
from honing import settings
from honing.testing.fake import FakeLM


@pytest.fixture(autouse=True)
def fresh_defaults(monkeypatch):
    monkeypatch.setattr(settings, "_global_settings", settings.Settings())


def run_in_plain_thread(fn):
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_defaults():
    current = settings.current()
    assert current.lm is None and current.adapter is None
    assert current.num_threads == 1 and current.max_errors is None
    assert current.trace_stack == () and current.usage_trackers == ()


def test_configure_sets_process_defaults_seen_by_every_thread():
    lm = FakeLM()
    hn.configure(lm=lm, num_threads=4)
    assert settings.current().lm is lm
    assert settings.current().num_threads == 4
    assert run_in_plain_thread(lambda: settings.current().lm) is lm
    hn.configure(num_threads=2)  # other settings are kept
    assert settings.current().lm is lm and settings.current().num_threads == 2


def test_configured_lm_is_used_by_predict():
    hn.configure(lm=FakeLM(["configured"]))
    assert hn.Predict("q -> a")(q="x").a == "configured"


@pytest.mark.parametrize("call", [lambda: hn.configure(llm=1), lambda: hn.context(temperature=0).__enter__()])
def test_unknown_setting_names_are_type_errors(call):
    with pytest.raises(TypeError, match="unknown setting"):
        call()


def test_context_overrides_inside_the_block_only():
    base, scoped = FakeLM(), FakeLM()
    hn.configure(lm=base)
    with hn.context(lm=scoped, max_errors=3) as current:
        assert current.lm is scoped
        assert settings.current().lm is scoped
        assert settings.current().max_errors == 3
    assert settings.current().lm is base
    assert settings.current().max_errors is None


def test_context_is_restored_after_an_exception():
    with pytest.raises(RuntimeError):
        with hn.context(lm="scoped"):
            raise RuntimeError("boom")
    assert settings.current().lm is None


def test_nested_contexts():
    with hn.context(lm="outer", num_threads=3):
        with hn.context(lm="inner"):
            assert settings.current().lm == "inner"
            assert settings.current().num_threads == 3  # inherited from the outer context
        assert settings.current().lm == "outer"
    assert settings.current().lm is None


def test_context_does_not_leak_into_threads_honing_did_not_start():
    with hn.context(lm="scoped"):
        assert run_in_plain_thread(lambda: settings.current().lm) is None


def test_map_in_threads_follows_the_context_and_keeps_order():
    seen_threads = set()

    def work(i):
        seen_threads.add(threading.current_thread().name)
        return i, settings.current().lm

    with hn.context(lm="scoped"):
        results = [f.result() for f in settings.map_in_threads(work, range(20), 4)]
    assert results == [(i, "scoped") for i in range(20)]
    assert all(name.startswith("honing") for name in seen_threads)


def test_map_in_threads_with_one_thread_runs_inline_and_captures_errors():
    def work(i):
        if i == 1:
            raise ValueError("bad item")
        return threading.current_thread()

    futures = list(settings.map_in_threads(work, range(3), 1))
    assert futures[0].result() is threading.current_thread()
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result()
    assert futures[2].result() is threading.current_thread()


def test_map_in_threads_delivers_errors_through_futures():
    def work(i):
        if i == 2:
            raise KeyError(i)
        return i

    futures = list(settings.map_in_threads(work, range(4), 3))
    assert [f.result() for f in futures if f.exception() is None] == [0, 1, 3]
    assert isinstance(futures[2].exception(), KeyError)


def test_submit_in_context_copies_the_callers_context():
    with ThreadPoolExecutor(max_workers=1) as pool:
        with hn.context(lm="scoped"):
            future = settings.submit_in_context(pool, lambda: settings.current().lm)
        outside = pool.submit(lambda: settings.current().lm)
        assert future.result() == "scoped"
        assert outside.result() is None


def test_a_context_in_one_thread_is_unaffected_by_configure_in_another():
    entered, configured = threading.Event(), threading.Event()
    seen = []

    def worker():
        with hn.context(lm="mine"):
            entered.set()
            configured.wait(5)
            seen.append(settings.current().lm)

    t = threading.Thread(target=worker)
    t.start()
    entered.wait(5)
    hn.configure(lm="global")
    configured.set()
    t.join()
    assert seen == ["mine"]
    assert settings.current().lm == "global"


def test_threads_with_different_contexts_never_see_each_others_lm():
    n_threads, n_calls = 8, 40
    predict = hn.Predict("question -> answer")  # no LM of its own: it must use the thread's context
    barrier = threading.Barrier(n_threads)
    lms, mismatches, errors = {}, [], []

    def worker(tid: int) -> None:
        me = f"thread-{tid}"
        lm = FakeLM(responder=lambda request: me)
        lms[tid] = lm
        try:
            with hn.context(lm=lm):
                barrier.wait(10)
                for i in range(n_calls):
                    answer = predict(question=f"{tid}:{i}").answer
                    if answer != me or settings.current().lm is not lm:
                        mismatches.append((tid, i, answer))
                # and in threads honing starts from inside this context
                inner = [f.result() for f in settings.map_in_threads(
                    lambda i: predict(question=f"inner {i}").answer, range(6), 3)]
                if inner != [me] * 6:
                    mismatches.append((tid, "inner", inner))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert mismatches == []
    for tid, lm in lms.items():
        assert len(lm.requests) == n_calls + 6
        assert all(r.prompt.split("Question: ")[-1].startswith((f"{tid}:", "inner")) for r in lm.requests)
    assert settings.current().lm is None
