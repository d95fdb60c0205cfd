"""Hard time limits for SymPy: a pool of persistent worker processes, killed and restarted when a
comparison runs too long.

Why processes: ``signal.alarm`` only works in the main thread (RL reward workers and notebooks
run elsewhere) and cannot interrupt a long big-integer operation in C. A child process can always
be killed. Why persistent: starting Python and importing SymPy takes about a second; a warm worker
answers in about a millisecond. The workers are started with ``subprocess`` (not
``multiprocessing``), so this also works inside daemonic worker processes.

Time accounting: the limit covers waiting for a free worker plus the comparison itself; starting a
worker (once, or after a kill) is not charged to the caller's limit.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

STARTUP_TIMEOUT = 120.0
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
# The worker imports only ``companion.verifier``: ``companion/__init__.py`` (torch, the model) is
# replaced by an empty package object, which keeps start-up near a second and memory small.
_BOOTSTRAP = (
    "import sys, types\n"
    "package = types.ModuleType('companion')\n"
    "package.__path__ = [sys.argv[1]]\n"
    "sys.modules['companion'] = package\n"
    "from companion.verifier._worker import main\n"
    "main()\n"
)


class WorkerTimeout(Exception):
    """The request ran past its time limit; the worker was killed."""


class WorkerCrashed(Exception):
    """The worker died (out of memory, a crash) or could not start."""


class _Worker:
    """One child process speaking JSON lines."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "-c", _BOOTSTRAP, PACKAGE_DIR],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=PACKAGE_ROOT)
        self.lines: queue.Queue = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=30)
        threading.Thread(target=self._pump, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.process.stderr, self.stderr_tail.append), daemon=True).start()
        try:
            ready = self._receive(STARTUP_TIMEOUT)
        except (WorkerTimeout, WorkerCrashed) as error:
            self.kill()
            raise WorkerCrashed(f"verifier worker failed to start: {''.join(self.stderr_tail)[-2000:]}") from error
        if not ready.get("ready"):
            self.kill()
            raise WorkerCrashed(f"verifier worker said {ready!r} instead of ready")

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def _receive(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise WorkerTimeout from None
        if line is None:
            raise WorkerCrashed("verifier worker exited")
        return json.loads(line)

    def request(self, payload: dict, timeout: float) -> dict:
        try:
            self.process.stdin.write(json.dumps(payload) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerCrashed("verifier worker is gone") from error
        return self._receive(timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


class WorkerPool:
    """Up to ``max_workers`` warm workers shared by all threads of this process."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, max_workers)
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._count = 0
        self._condition = threading.Condition()

    def _acquire(self, deadline: float) -> tuple[_Worker, float]:
        """A free worker (started if needed) and the seconds spent waiting for one; starting a
        worker is not counted as waiting."""
        began = time.monotonic()
        with self._condition:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker, time.monotonic() - began
                    worker.kill()  # died while idle (killed from outside): replace it
                    self._count -= 1
                if self._count < self.max_workers:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerTimeout("no free verifier worker")
                self._condition.wait(remaining)
            self._count += 1
        waited = time.monotonic() - began
        try:
            return _Worker(), waited
        except BaseException:
            with self._condition:
                self._count -= 1
                self._condition.notify()
            raise

    def _release(self, worker: _Worker | None) -> None:
        with self._condition:
            if worker is None:
                self._count -= 1
            else:
                self._idle.append(worker)
            self._condition.notify()

    def run(self, payload: dict, timeout: float) -> dict:
        """Send ``payload`` to a worker; kill that worker if it has not answered in ``timeout``."""
        worker, waited = self._acquire(time.monotonic() + timeout)
        try:
            result = worker.request(payload, timeout - min(waited, timeout))
        except BaseException:  # a time-out, a crash, or an interrupt: this worker is not reused
            worker.kill()
            self._release(None)
            raise
        self._release(worker)
        return result

    def warm_up(self) -> None:
        """Start one worker now, so the first grade that needs SymPy does not wait for it."""
        self._release(self._acquire(time.monotonic() + STARTUP_TIMEOUT)[0])

    def shutdown(self) -> None:
        with self._condition:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def default_workers() -> int:
    configured = os.environ.get("COMPANION_VERIFIER_WORKERS")
    if configured:
        return int(configured)
    return max(1, min(8, os.cpu_count() or 1))


def pool() -> WorkerPool:
    """The process-wide pool (a fresh one after ``fork``: pipes to the parent's workers are not ours)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = WorkerPool(default_workers())
        return _POOL


def shutdown() -> None:
    """Stop the idle workers (they restart on demand)."""
    with _POOL_LOCK:
        current = _POOL
    if current is not None and current.pid == os.getpid():
        current.shutdown()


atexit.register(shutdown)
