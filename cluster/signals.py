"""Keep our SIGINT/SIGTERM handlers when Ray is initialised in the same process.

`ray.init` installs Ray's native failure-signal handler for SIGTERM (and others), replacing the
Python-level handler at the OS level: a supervisor or router worker that joins Ray would then
print a stack dump on SIGTERM instead of stopping in order (seen: the supervisor ignored SIGTERM,
was killed after the harness's timeout, and left its Postgres running). Re-registering the Python
handlers after `ray.init` puts ours back in front. Only the main thread may set handlers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def python_handlers() -> dict[int, Any]:
    return {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}


def restore(handlers: dict[int, Any]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in handlers.items():
        if handler is not None:
            signal.signal(signum, handler)


def keeping_handlers(call: Callable[[], T]) -> T:
    """Run `call` (which may initialise Ray) and put the Python stop handlers back afterwards."""
    handlers = python_handlers()
    try:
        return call()
    finally:
        restore(handlers)
