"""Hosted training through litellm's fine-tuning API (OpenAI, Azure OpenAI, Vertex AI).

Upload the chat JSONL (`litellm.create_file`, purpose ``fine-tune``), create the job
(`litellm.create_fine_tuning_job`), then poll it (`litellm.retrieve_fine_tuning_job`) every
`poll_interval` seconds with a progress bar until it succeeds, fails or `timeout` passes. The job's
`fine_tuned_model` becomes the predictors' LM (``<provider>/<fine_tuned_model>``, with the target LM's
endpoint and key). A failed job raises with the provider's message; a timeout raises with the job id so
it can be looked up later. The training files stay in the run directory either way, and so does
``job.json`` (the uploaded file and the job, written as soon as the job exists): compiling again with
``resume=True`` polls that job instead of uploading and paying for a new one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from honing.plugin_api import OptimizerError, import_litellm, scrub

#: Providers whose fine-tuning API litellm drives.
PROVIDERS = ("openai", "azure", "vertex_ai")
FINAL = ("succeeded", "failed", "cancelled")
JOB_FILE = "job.json"


def provider_and_model(model: str) -> tuple[str, str]:
    provider, _, name = model.partition("/")
    return provider, name


def credentials(lm: Any) -> dict[str, Any]:
    """The endpoint and key of an honing LM, as litellm kwargs (the key only when one was given)."""
    out: dict[str, Any] = {}
    api_base = getattr(lm, "api_base", None)
    if api_base:
        out["api_base"] = api_base
    secret = getattr(lm, "_api_key", None)
    if secret is not None:
        out["api_key"] = secret.reveal()
    return out


def _message(exc: BaseException, lm: Any) -> str:
    secrets = [getattr(lm, "_api_key", None)]
    return scrub(f"{type(exc).__name__}: {exc}", [s for s in secrets if s is not None])


class HostedJob:
    """One fine-tuning job: `start()` uploads and creates it, `wait()` polls it to the end."""

    def __init__(self, *, target_lm: Any, chat_file: Path, settings: dict[str, Any], desc: str,
                 key: dict[str, Any] | None = None) -> None:
        self.key = key or {}
        self.target_lm = target_lm
        self.provider, self.base_model = provider_and_model(target_lm.model)
        self.chat_file = chat_file
        self.settings = settings
        self.desc = desc
        self.file_id: str | None = None
        self.job_id: str | None = None
        self.started = 0.0
        self.statuses: list[str] = []

    def _kwargs(self) -> dict[str, Any]:
        return {"custom_llm_provider": self.provider, **credentials(self.target_lm)}

    def hyperparameters(self) -> dict[str, Any]:
        s = self.settings
        return {"n_epochs": s["epochs"], "batch_size": s["batch_size"],
                "learning_rate_multiplier": s["learning_rate_multiplier"]}

    def start(self) -> None:
        litellm = import_litellm()
        self.started = time.perf_counter()
        try:
            with self.chat_file.open("rb") as handle:
                uploaded = litellm.create_file(file=(self.chat_file.name, handle.read()), purpose="fine-tune",
                                               **self._kwargs())
            self.file_id = uploaded.id
        except Exception as exc:  # noqa: BLE001 - reported with the provider's message
            raise OptimizerError(f"BootstrapFinetune: uploading {self.chat_file} to {self.provider} failed: "
                                 f"{_message(exc, self.target_lm)} (the training files are kept in "
                                 f"{self.chat_file.parent})") from None
        try:
            job = litellm.create_fine_tuning_job(
                model=self.base_model, training_file=self.file_id, hyperparameters=self.hyperparameters(),
                suffix=self.settings["suffix"] or None, seed=self.settings["seed"], **self._kwargs())
        except Exception as exc:  # noqa: BLE001
            raise OptimizerError(f"BootstrapFinetune: creating the fine-tuning job for "
                                 f"{self.target_lm.model!r} failed: {_message(exc, self.target_lm)} "
                                 f"(uploaded file {self.file_id}; the training files are kept in "
                                 f"{self.chat_file.parent})") from None
        self.job_id = job.id
        self.statuses.append(str(job.status))
        state = {"key": self.key, "file_id": self.file_id, "job_id": self.job_id}
        (self.chat_file.parent / JOB_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    def attach(self) -> bool:
        """Take over the job an earlier `start()` created for the same key (see ``job.json``); False when
        there is none."""
        path = self.chat_file.parent / JOB_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if state.get("key") != self.key or not state.get("job_id"):
            return False
        self.file_id, self.job_id = state.get("file_id"), state["job_id"]
        self.started = time.perf_counter()
        return True

    def wait(self, *, sleep: Any = time.sleep) -> dict[str, Any]:
        from tqdm.auto import tqdm

        litellm = import_litellm()
        timeout = float(self.settings["timeout"])
        interval = float(self.settings["poll_interval"])
        bar = tqdm(total=None, desc=self.desc, unit="poll", dynamic_ncols=True)
        job: Any = None
        try:
            while True:
                try:
                    job = litellm.retrieve_fine_tuning_job(fine_tuning_job_id=self.job_id, **self._kwargs())
                except Exception as exc:  # noqa: BLE001
                    raise OptimizerError(f"BootstrapFinetune: checking fine-tuning job {self.job_id} failed: "
                                         f"{_message(exc, self.target_lm)} (the training files are kept in "
                                         f"{self.chat_file.parent})") from None
                status = str(job.status)
                if not self.statuses or self.statuses[-1] != status:
                    self.statuses.append(status)
                bar.update(1)
                bar.set_postfix(status=status, tokens=job.trained_tokens or 0)
                if status in FINAL:
                    break
                waited = time.perf_counter() - self.started
                if waited + interval > timeout:
                    raise OptimizerError(
                        f"BootstrapFinetune: fine-tuning job {self.job_id} on {self.provider} is still "
                        f"{status!r} after {waited:.0f} s (timeout {timeout:g} s). It may still finish: "
                        f"look it up with litellm.retrieve_fine_tuning_job({self.job_id!r}); the training "
                        f"files are kept in {self.chat_file.parent}")
                sleep(interval)
        finally:
            bar.close()
        if status != "succeeded" or not job.fine_tuned_model:
            (self.chat_file.parent / JOB_FILE).unlink(missing_ok=True)  # resuming starts a new job
            error = getattr(job, "error", None)
            why = getattr(error, "message", None) or (str(error) if error else "no reason given")
            raise OptimizerError(f"BootstrapFinetune: fine-tuning job {self.job_id} {status}: {why} "
                                 f"(the training files are kept in {self.chat_file.parent})")
        return {
            "model": f"{self.provider}/{job.fine_tuned_model}",
            "job_id": self.job_id,
            "file_id": self.file_id,
            "statuses": list(self.statuses),
            "trained_tokens": job.trained_tokens,
            "hyperparameters": {**self.hyperparameters(), "suffix": self.settings["suffix"],
                                "seed": self.settings["seed"]},
            "seconds": round(time.perf_counter() - self.started, 2),
        }
