"""Where sweep tasks run: in this process (serial, the default) or as Ray tasks.

Both executors take the same calls, ``{key: args}``, run ``fn(*shared, *args)`` for each and return
``{key: result}`` in the order the calls were given, so a serial and a Ray run of the same calls
give the same dict. Results are keyed, never appended: a task Ray re-runs after its worker died
can only fill its own key once. Every task first runs the worker set-up (``setup``, a
``"module:function"`` string such as ``"rlviz.envs.headless:prepare"``) and pins torch to one thread,
so numbers do not depend on where or next to what a task ran.

Ray is optional (``pip install rlviz[ray]``); without it :func:`make_executor` falls back to the
serial executor and says once how to get parallelism.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "Executor",
    "RayExecutor",
    "SerialExecutor",
    "make_executor",
    "parallelism_hint",
    "ray_available",
]

RAY_HINT = "pip install rlviz[ray]"
_hinted: list[bool] = []  # the "say it once per process" flag of the serial fallback


def ray_available() -> bool:
    """True when Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def parallelism_hint() -> None:
    """Say once per process (stderr) that tasks run serially and how to spread them."""
    if _hinted or ray_available():
        return
    _hinted.append(True)
    print(
        f"rlviz: Ray is not installed, so tasks run serially in this process; `{RAY_HINT}` and "
        "pass --workers N (or --address) to spread them over cores or a cluster",
        file=sys.stderr,
    )


def resolve_setup(setup: str | Callable[[], object] | None) -> Callable[[], object] | None:
    """The set-up function named ``"module:function"`` (or ``"module.function"``)."""
    if setup is None or callable(setup):
        return setup
    module, sep, name = setup.partition(":")
    if not sep:
        module, _, name = setup.rpartition(".")
    if not module or not name:
        raise ValueError(f"setup {setup!r} should name a function as 'module:function'")
    return getattr(importlib.import_module(module), name)


def run_task(setup: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    """One task: the worker set-up (idempotent), then ``fn(*args)`` on one torch thread."""
    hook = resolve_setup(setup)
    if hook is not None:
        hook()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same reduction order in every process: identical numbers
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


class Executor:
    """Runs keyed calls of one task function; see the module docstring."""

    workers: int = 1

    def __init__(self, setup: str | None = None, progress: bool = True):
        self.setup = setup
        self.progress = progress

    def map(
        self,
        fn: Callable[..., Any],
        calls: Mapping[Hashable, tuple],
        shared: tuple = (),
        desc: str = "tasks",
    ) -> dict[Hashable, Any]:
        """``{key: fn(*shared, *args)}`` for every ``key: args`` of ``calls``, in their order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor started (a local Ray cluster)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        """One line for the log: where the tasks run."""
        return "serial (this process)"


class SerialExecutor(Executor):
    """Every task in this process, one after the other (the embedded default)."""

    def map(self, fn, calls, shared=(), desc="tasks"):
        results = {}
        with _progress(len(calls), desc, self.progress) as bar:
            for key, args in calls.items():
                results[key] = run_task(self.setup, fn, *shared, *args)
                bar.update()
        return results


class RayExecutor(Executor):
    """Each call one Ray task (1 CPU), retried on worker death, results streamed with ``ray.wait``.

    Starts a local cluster of ``workers`` CPUs (``None``: the machine's cores), or joins
    ``address``; reuses a cluster this process already started (and then leaves it running).
    ``setup`` also becomes the cluster's ``worker_process_setup_hook`` when this executor starts
    it, so it runs as each worker process starts, before any task.
    """

    def __init__(
        self,
        workers: int | None = None,
        address: str | None = None,
        setup: str | None = None,
        progress: bool = True,
        max_retries: int = 3,
        runtime_env: dict | None = None,
    ):
        import ray

        super().__init__(setup, progress)
        self.max_retries = max_retries
        self._owns = not ray.is_initialized()
        if self._owns:
            env = dict(runtime_env or {})
            if setup is not None:
                env.setdefault("worker_process_setup_hook", setup.replace(":", "."))
            ray.init(
                address=address,
                num_cpus=workers if address is None else None,
                runtime_env=env or None,
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self.address = address

    def map(self, fn, calls, shared=(), desc="tasks"):
        import ray

        remote = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(
            run_task
        )
        shared_refs = [ray.put(value) for value in shared]  # sent once, not once per task
        pending = {
            remote.remote(self.setup, fn, *shared_refs, *args): key for key, args in calls.items()
        }
        results: dict[Hashable, Any] = {}
        try:
            with _progress(len(calls), desc, self.progress) as bar:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        key = pending.pop(ref)
                        results[key] = ray.get(ref)  # the task's own error, after retries
                        bar.update()
        finally:
            for ref in pending:  # an error above: stop the rest
                ray.cancel(ref)
        return {key: results[key] for key in calls}

    def close(self) -> None:
        import ray

        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else "local cluster"
        return f"Ray, {where}, {self.workers} CPUs"


def make_executor(
    workers: int | None = 1,
    address: str | None = None,
    *,
    setup: str | None = None,
    progress: bool = True,
    hint: bool = True,
    max_retries: int = 3,
    runtime_env: dict | None = None,
) -> Executor:
    """The executor ``--workers`` / ``--address`` ask for.

    Args:
        workers: 1: serial in this process; N > 1: a local Ray cluster of N CPUs; 0 or None: one
            with every core of this machine. Ignored with ``address``.
        address: a running Ray cluster to join (``ray://...`` or ``HOST:PORT``, or ``"auto"``).
        setup: ``"module:function"`` every worker runs before its tasks.
        hint: without Ray, say once (stderr) how to get parallelism.

    Raises:
        ValueError: negative ``workers``; RuntimeError: ``address`` given but Ray not installed.
    """
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 (0: every core), got {workers}")
    parallel = address is not None or workers != 1
    if parallel and not ray_available():
        if address is not None:
            raise RuntimeError(
                f"--address {address!r} needs Ray, which is not installed; `{RAY_HINT}`"
            )
        if hint:
            parallelism_hint()
        parallel = False
    if not parallel:
        return SerialExecutor(setup, progress)
    return RayExecutor(
        None if workers in (None, 0) else workers,
        address,
        setup,
        progress,
        max_retries=max_retries,
        runtime_env=runtime_env,
    )


def blocks_of(seeds: Sequence[int], block_size: int) -> list[tuple[int, ...]]:
    """``seeds`` cut into consecutive blocks of ``block_size`` (the last may be shorter)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    seeds = [int(s) for s in seeds]
    return [tuple(seeds[i : i + block_size]) for i in range(0, len(seeds), block_size)]
