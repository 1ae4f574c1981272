"""Parts of one job in processes of their own: `run_parts(fn, jobs, report)`.

Why processes and not threads: per-video work such as an import's (h5py reads, JSON, small file
writes) is Python holding the GIL, so threads take turns on one core. Each part runs
`fn(job, report)` in a fresh (spawned) interpreter; `report(payload)` reaches the caller's `report`
on the calling thread, in order per part. The first error of any part stops them all and is raised
here: stpipe's own errors and OSErrors (a full disk keeps its errno) as they were, anything else as
a RuntimeError with its type and message. A part whose caller died (kill -9) exits on its own.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queues
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pipeline import errors

PARENT_POLL_S = 1.0


def can_spawn() -> bool:
    """Whether a spawned interpreter can start here: it re-runs the caller's `__main__` from its
    file, so a program read from stdin (`python - <<EOF`) cannot have parts (interactive sessions,
    `python -c` and script files can)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.isfile(path)


def check_not_starting_a_part() -> None:
    """Refuse to run while a spawned part starts: the part is re-running the calling script, whose code
    is not under `if __name__ == "__main__":` (it would redo the caller's job, e.g. overwrite its output,
    and wait on it). That guard is Python's rule for programs that start processes."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise errors.ConfigError('a process started for this job re-ran the calling script: put the script\'s '
                                 'code under `if __name__ == "__main__":`')


def run_parts(fn: Callable[[Any, Callable[[Any], None]], Any], jobs: Sequence[Any],
              report: Callable[[Any], None]) -> list[Any]:
    """fn(job, report) for every job, each in its own process; their results in the jobs' order."""
    context = multiprocessing.get_context("spawn")  # forking a process that holds zarr's and h5py's threads is unsafe
    messages = context.Queue()
    processes = [context.Process(target=_part, args=(fn, job, i, messages, os.getpid()), daemon=True,
                                 name=f"stpipe-part-{i}") for i, job in enumerate(jobs)]
    for i, process in enumerate(processes):
        try:
            process.start()
        except (BrokenPipeError, EOFError):  # its interpreter exited before reading its job
            raise RuntimeError(f"part {i} of {len(jobs)} could not start; a script that calls this needs its code "
                               'under `if __name__ == "__main__":`') from None
    results: dict[int, Any] = {}
    try:
        while len(results) < len(jobs):
            try:
                kind, i, payload = messages.get(timeout=PARENT_POLL_S)
            except queues.Empty:
                for i, process in enumerate(processes):
                    if i not in results and process.exitcode not in (None, 0):
                        raise RuntimeError(f"part {i} of {len(jobs)} died (exit code {process.exitcode})") from None
                continue
            if kind == "report":
                report(payload)
            elif kind == "done":
                results[i] = payload
            else:
                raise _rebuilt(payload)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()
    return [results[i] for i in range(len(jobs))]


def _part(fn, job, i: int, messages, parent: int) -> None:
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    try:
        messages.put(("done", i, fn(job, lambda payload: messages.put(("report", i, payload)))))
    except BaseException as exc:  # noqa: BLE001 - every error goes back to the caller, which raises it
        messages.put(("error", i, _portable(exc)))


def _portable(exc: BaseException) -> tuple:
    """An error as plain values (what any exception's pickling could not promise)."""
    if isinstance(exc, OSError):
        return ("os", exc.errno, exc.strerror or str(exc), exc.filename)
    if isinstance(exc, errors.StpipeError):
        return ("stpipe", type(exc).__name__, str(exc))
    return ("other", f"{type(exc).__name__}: {exc}")


def _rebuilt(payload: tuple) -> BaseException:
    kind, *values = payload
    if kind == "os":
        return OSError(*values) if values[0] is not None else OSError(values[1])
    if kind == "stpipe":
        return getattr(errors, values[0], errors.StpipeError)(values[1])
    return RuntimeError(values[0])


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
