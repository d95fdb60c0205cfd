"""The grading worker: a child process that runs SymPy comparisons for ``sandbox.WorkerPool``.

Protocol: one JSON object per line on stdin, one JSON answer per line on stdout. The first line
it writes is ``{"ready": true}`` once SymPy is imported. It exits when stdin closes (its parent
died or shut it down). The parent kills it when a request runs past its time limit.
"""
from __future__ import annotations

import json
import sys
import time

MEMORY_LIMIT_BYTES = 4 << 30


def _limit_memory() -> None:
    """Cap the address space so a runaway expression fails with MemoryError instead of swapping."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    except (ImportError, ValueError, OSError):
        pass


def handle(request: dict) -> dict:
    from companion.verifier.core import symbolic_outcome

    op = request.get("op", "compare")
    if op == "sleep":  # used by the tests of the time limit
        time.sleep(float(request["seconds"]))
        return {"equal": False, "reason": "slept", "method": "sleep"}
    if op != "compare":
        return {"equal": False, "reason": f"unknown op {op!r}", "method": "worker"}
    try:
        outcome = symbolic_outcome(request["answer"], request["gold"])
    except MemoryError:
        return {"equal": False, "reason": "too large: out of memory", "method": "symbolic"}
    return {"equal": outcome.equal, "reason": outcome.reason, "method": outcome.method}


def main() -> None:
    _limit_memory()
    import companion.verifier.symbolic  # noqa: F401  (import SymPy before saying ready)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(handle(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
