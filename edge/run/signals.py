"""Ctrl-C and SIGTERM: raised as Interrupted where cleanup can run, or held while outputs move into place."""

import os
import signal
import threading
from contextlib import contextmanager

from ..errors import Interrupted


@contextmanager
def signals_raise():
    """SIGTERM becomes an exception in the main thread, like Ctrl-C, so cleanup runs."""
    def on_term(signum, frame):
        raise Interrupted(signum)

    if os.name != "posix" or not _is_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_deferred():
    """SIGINT and SIGTERM are held until the block ends, then raised as Interrupted."""
    if os.name != "posix" or not _is_main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise Interrupted(caught[0])


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
