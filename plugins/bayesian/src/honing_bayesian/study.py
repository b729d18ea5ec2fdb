"""The Optuna study behind `BayesianSignatureOptimizer`: storage, workers, and trials left by dead ones.

Storage. ``storage=None`` keeps the study in the run directory (``sqlite:///<run_dir>/study.db``), or in
memory when there is no run directory. Any SQLAlchemy URL Optuna accepts works, e.g.
``postgresql://user:pass@host/db`` for several workers on several machines. The storage is opened (and
so reached) before any LM call; an unreachable one is a clear error with the password hidden.

Workers. Every worker (process) runs the same compile against the same study:

- The worker that *creates* the study is the leader (creation is atomic: the study name is unique in
  the storage). It stores the optimizer's parameters and a fingerprint of the data and program as study
  user attrs, builds the candidates (demo sets, then instruction proposals), stores them as study user
  attrs too, enqueues the baseline trial and marks the study ready. The others check the parameters and
  the data first (a study made with other ones is refused, naming the difference), wait for ready, and
  read the candidates: every worker searches exactly the same candidate set, whatever its LM sampled,
  and no worker pays for proposals twice. A leader killed during setup is replaced: a waiting worker
  on the same host sees that its process is gone; one on another host, that its setup heartbeat
  (`SETUP_HEARTBEAT` seconds) is older than `GRACE_PERIOD`. The replacement redoes the setup, whose LM
  calls the disk cache has kept.
- Trials carry the worker that runs them (host, pid, process start time) as a user attr. A trial left
  RUNNING by a dead worker is marked FAIL — at once when the worker was on this host, otherwise by
  Optuna's heartbeat (`HEARTBEAT_INTERVAL`, `GRACE_PERIOD`) — and a full evaluation is enqueued again.
- Each trial draws from a TPE sampler seeded with (seed, trial number): reproducible for one worker,
  and two workers never draw the same startup points (a shared seed would make them repeat each other).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Self

from honing.plugin_api import OptimizerError, with_driver

#: Seconds between the heartbeats a running trial writes (Optuna's), and after which a silent trial of
#: another host counts as dead.
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 60
#: Seconds between the leader's setup heartbeats.
SETUP_HEARTBEAT = 5
#: Attempts at opening a storage whose tables another worker is creating at the same moment.
STORAGE_ATTEMPTS = 4

ATTR_OPTIMIZER = "honing_optimizer"
ATTR_PARAMETERS = "honing_parameters"
ATTR_DATA = "honing_data"
ATTR_OWNER = "honing_setup_owner"
ATTR_SETUP_HEARTBEAT = "honing_setup_heartbeat"
ATTR_SETUP = "honing_setup"
ATTR_READY = "honing_ready"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - a dependency of this package
        raise OptimizerError("honing-bayesian needs optuna: pip install optuna") from exc
    return optuna


class _QuietPeriod:
    """Optuna's verbosity and the warning filters are process-wide, and compiles may run at once in
    threads: they share one quiet period, counted, so that one compile leaving it does not undo it while
    another still runs (saving and restoring them per compile would, and an experimental-feature warning
    would then reach a process that treats warnings as errors)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._verbosity = 0
        self._filters: Any = None

    def enter(self, optuna: Any) -> None:
        with self._lock:
            if self._users == 0:
                self._verbosity = optuna.logging.get_verbosity()
                optuna.logging.set_verbosity(optuna.logging.WARNING)
                self._filters = warnings.catch_warnings()
                self._filters.__enter__()
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._users += 1

    def leave(self, optuna: Any) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._filters.__exit__(None, None, None)
                optuna.logging.set_verbosity(self._verbosity)


_QUIET = _QuietPeriod()


@contextlib.contextmanager
def quiet_optuna() -> Iterator[Any]:
    """Optuna without its per-trial INFO lines and experimental-feature warnings (restored once the last
    compile that asked for them is done; see `_QuietPeriod`)."""
    optuna = _optuna()
    _QUIET.enter(optuna)
    try:
        yield optuna
    finally:
        _QUIET.leave(optuna)


def redact(url: str) -> str:
    """The URL with its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy understands: hide everything after a ':' in the netloc
        head, sep, tail = url.partition("://")
        if "@" in tail:
            creds, _, rest = tail.partition("@")
            return f"{head}{sep}{creds.split(':', 1)[0]}:***@{rest}"
        return url


# ----------------------------------------------------------------------------------------------------
# who is running

def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> str:
    """``host:pid:start``: this process, told apart from a later one that reuses its pid."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '-'}"


def is_dead_here(worker: str | None) -> bool:
    """True when `worker` ran on this host and its process is gone (False when it cannot tell)."""
    if not worker:
        return False
    try:
        host, pid_text, start = worker.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    current = _start_time(pid)
    return start != "-" and current is not None and current != start


# ----------------------------------------------------------------------------------------------------
# storage and study

def open_storage(url: str | None, owner: str, on_stale: Callable[[Any, Any], None]) -> Any:
    """An Optuna storage for `url` (None: in memory), reached now; a clear error if it cannot be."""
    if url is None:
        return None
    shown, url = redact(url), with_driver(url)
    with quiet_optuna() as optuna:
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("postgresql"):
            engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        elif url.startswith("sqlite"):
            engine_kwargs = {"connect_args": {"timeout": 60}}
        callback = ("heartbeat_stale_trial_callback"
                    if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                    else "failed_trial_callback")
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=HEARTBEAT_INTERVAL,
                                                     grace_period=GRACE_PERIOD, **{callback: on_stale})
                break
            except Exception as exc:  # noqa: BLE001 - drivers raise many kinds; all mean "cannot use it"
                if attempt + 1 < STORAGE_ATTEMPTS and _lost_race(exc):
                    time.sleep(0.2 + random.random())  # another worker is creating the tables: let it finish
                    continue
                detail = " ".join(str(exc).split())[:300].replace(url, shown)
                raise OptimizerError(f"{owner}: cannot open the study storage {shown}: {type(exc).__name__}: "
                                     f"{detail}") from None
    if url.startswith("sqlite"):
        _sqlite_wal(storage.engine)
    return storage


def _lost_race(exc: BaseException) -> bool:
    """Whether opening the storage failed because another worker was creating Optuna's tables in the same
    fresh database at the same moment (duplicate key / table already exists), not because it is unusable."""
    from sqlalchemy import exc as sa

    while exc is not None:
        if isinstance(exc, (sa.IntegrityError, sa.ProgrammingError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _sqlite_wal(engine: Any) -> None:
    """SQLite in WAL mode with `synchronous=NORMAL`: a commit survives a killed process (not a power cut)
    and costs no fsync, which matters with a dozen small commits per trial."""
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # pooled connections made before the listener reconnect with it


def open_study(storage: Any, name: str, sampler: Any, owner: str) -> tuple[Any, bool]:
    """The study and whether this worker created it (and so leads the setup)."""
    with quiet_optuna() as optuna:
        if storage is None:
            return optuna.create_study(direction="maximize", sampler=sampler, study_name=name), True
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                       load_if_exists=False), True
        except optuna.exceptions.DuplicatedStudyError:
            pass
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except Exception as exc:
            raise OptimizerError(f"{owner}: cannot load the study {name!r}: {exc}") from exc
        if study.directions != [optuna.study.StudyDirection.MAXIMIZE]:
            raise OptimizerError(f"{owner}: the study {name!r} does not maximize one value; it is not a honing study")
        return study, False


def check_study(study: Any, owner: str, parameters: dict[str, Any], data: str, worker: str, *,
                wait: float = 30.0) -> None:
    """Refuse a study made by another optimizer, with other parameters or on other data (naming what
    differs). A study just created by another worker may not have its attrs yet, or only some of them
    (they are written one by one): wait for all of them."""
    deadline = time.monotonic() + wait
    while True:
        attrs = study.user_attrs
        if all(key in attrs for key in (ATTR_OPTIMIZER, ATTR_DATA, ATTR_PARAMETERS)):
            break
        if study.trials:
            raise OptimizerError(f"{owner}: the study {study.study_name!r} already has trials that honing did not "
                                 "make; choose another study name")
        if time.monotonic() > deadline:  # its creator died before writing them: this worker claims it
            claim(study, parameters, data, owner, worker)
            return
        time.sleep(0.2)
    if attrs.get(ATTR_OPTIMIZER) != owner:
        raise OptimizerError(f"{owner}: the study {study.study_name!r} belongs to {attrs.get(ATTR_OPTIMIZER)!r}; "
                             "choose another study name")
    theirs = attrs[ATTR_PARAMETERS]
    if theirs != parameters:
        diff = sorted(k for k in set(theirs) | set(parameters) if theirs.get(k) != parameters.get(k))
        details = ", ".join(f"{k}: {theirs.get(k)!r} in the study, {parameters.get(k)!r} now" for k in diff)
        raise OptimizerError(f"{owner}: the study {study.study_name!r} was made with other parameters ({details}); "
                             "use the same ones to continue it, or another study name to start afresh")
    if attrs.get(ATTR_DATA) != data:
        raise OptimizerError(f"{owner}: the study {study.study_name!r} was made with another trainset, valset or "
                             "program; use the same ones to continue it, or another study name")


def claim(study: Any, parameters: dict[str, Any], data: str, owner: str, worker: str) -> None:
    """Write what identifies the study's run (done by the worker that creates it). The setup owner goes
    first and the parameters last: a worker that sees the parameters also sees everything else."""
    study.set_user_attr(ATTR_OWNER, worker)
    study.set_user_attr(ATTR_SETUP_HEARTBEAT, time.time())
    study.set_user_attr(ATTR_OPTIMIZER, owner)
    study.set_user_attr(ATTR_DATA, data)
    study.set_user_attr(ATTR_PARAMETERS, parameters)


def fingerprint(value: Any) -> str:
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SetupHeartbeat:
    """While the leader builds the candidates, it says so every `SETUP_HEARTBEAT` seconds."""

    def __init__(self, study: Any, worker: str) -> None:
        self.study = study
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="honing-setup-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self.study.set_user_attr(ATTR_OWNER, self.worker)
        self.study.set_user_attr(ATTR_SETUP_HEARTBEAT, time.time())
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(SETUP_HEARTBEAT):
            try:
                self.study.set_user_attr(ATTR_SETUP_HEARTBEAT, time.time())
            except Exception as exc:  # noqa: BLE001 - a missed beat is harmless; the next one retries
                logging.getLogger("honing.optimizers").debug("setup heartbeat failed: %s", exc)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def wait_for_setup(study: Any, worker: str, *, poll: float = 0.5, say: Callable[[str], None]) -> bool:
    """Wait until the leader has stored the candidates. Returns False when this worker must do the setup
    itself (the leader is dead); True when the setup is there to read."""
    said = False
    while True:
        attrs = study.user_attrs
        if attrs.get(ATTR_READY):
            return True
        owner = attrs.get(ATTR_OWNER)
        beat = attrs.get(ATTR_SETUP_HEARTBEAT)
        stale = beat is None or time.time() - float(beat) > GRACE_PERIOD
        if owner is None or is_dead_here(owner) or stale:
            # take the setup over; if another waiting worker took it in the meantime, keep waiting
            study.set_user_attr(ATTR_OWNER, worker)
            study.set_user_attr(ATTR_SETUP_HEARTBEAT, time.time())
            time.sleep(1.0)
            if study.user_attrs.get(ATTR_OWNER) == worker:
                return False
        if not said:
            say(f"waiting for worker {owner} to finish building the candidates")
            said = True
        time.sleep(poll)


# ----------------------------------------------------------------------------------------------------
# sampling

def trial_seed(seed: Any, number: int) -> int:
    return int(hashlib.sha256(f"{seed}:trial:{number}".encode()).hexdigest()[:8], 16)


def make_sampler(seed: Any, n_startup_trials: int) -> Any:
    """A multivariate TPE sampler whose randomness is seeded per trial number (see the module docstring)."""
    optuna = _optuna()

    class TrialSeededTPE(optuna.samplers.BaseSampler):
        """TPE, with a fresh seeded instance per trial (only public sampler API is used)."""

        def __init__(self) -> None:
            self._number: int | None = None
            self._tpe: Any = None
            self._lock = threading.Lock()

        def _for(self, trial: Any) -> Any:
            with self._lock:
                if self._number != trial.number:
                    with quiet_optuna():
                        self._tpe = optuna.samplers.TPESampler(
                            seed=trial_seed(seed, trial.number), multivariate=True,
                            n_startup_trials=n_startup_trials, constant_liar=True)
                    self._number = trial.number
                return self._tpe

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            with quiet_optuna():
                return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._for(trial).after_trial(study, trial, state, values)

    return TrialSeededTPE()
