"""Joining a Ray cluster for --ray: its address, and a clear line for one that cannot be joined."""

import logging
import os
import signal
import socket

from .. import errors
from ..errors import ClusterError, EdgeError, Interrupted, UsageError


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray on this machine and every node: pip install 'edge[ray]'") from None
    return ray


def connect(ray, address: str, notice) -> None:
    """Join the cluster at `address`; `auto`: the one Ray finds here (RAY_ADDRESS, or the last
    `ray start` on this machine), else a cluster of this machine alone, started for this run."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == "auto":
            here = _address_here()
            if here is not None and _unanswered(_host_port(here)) is None:
                ray.init(address=here, **quiet)
                notice(f"Ray: joined the cluster at {here} ({_cpus(ray)} CPUs)")
            else:
                stale = f"the cluster last started here ({here}) does not answer, so " if here else ""
                ray.init(address="local", include_dashboard=False, **quiet)
                notice(f"Ray: {stale}this run started a cluster of this machine alone ({_cpus(ray)} CPUs); "
                       f"`ray start` makes one of several machines")
        else:
            if (why := _unanswered(_host_port(address))) is not None:
                raise ClusterError(f"cannot reach a Ray cluster at {address}: {why}; `ray status` on its head node "
                                   f"says whether it runs (its address is HEAD:6379 by default)")
            ray.init(address=address, **quiet)
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    except EdgeError:
        raise
    except Exception as err:  # Ray's own, of many kinds
        raise ClusterError(f"cannot join the Ray cluster at {address}: {errors.last_line(err)}") from err
    _errors_to_stderr()


def _host_port(address: str) -> tuple[str, int]:
    if address.startswith("ray://"):  # Ray Client cannot stream an actor's results, which the workers' events are
        raise UsageError(f"--ray needs the cluster's own address, HEAD:6379, not a Ray Client one ({address})")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray takes auto or a cluster's HOST:PORT (as `ray start --head` prints it), "
                         f"got {address!r}")
    return host, int(port)


def _errors_to_stderr() -> None:
    """Ray prints the cluster's error messages (a worker died, and why) on the driver's stdout,
    which must hold nothing but the run's --json; they go to stderr instead, each cut to its
    first line (the rest is a node's log, which stays in its log files; edge says what it does
    about the death). Ray has no option for it, so its printing function is wrapped, where it
    still has the one it had."""
    try:
        from ray._private import worker
    except ImportError:
        return
    prints = worker.print_to_stdstream
    if getattr(prints, "edge_stderr", False):
        return

    def to_stderr(data, **kwargs):
        lines = [line.strip().splitlines()[0] for line in data.get("lines", []) if line.strip()]
        return prints({**data, "lines": lines, "is_err": True}, **kwargs)

    to_stderr.edge_stderr = True
    worker.print_to_stdstream = to_stderr


def _cpus(ray) -> int:
    return int(ray.cluster_resources().get("CPU", 0))


def _address_here() -> str | None:
    """The cluster Ray's own address "auto" means, or None."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # moved in a later Ray: its documented variable, at least
        return os.environ.get("RAY_ADDRESS") or None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        return None


def _unanswered(host_port: tuple[str, int]) -> str | None:
    """Why nothing answers at `host_port`, or None when something does. Ray itself retries an
    address that does not answer for minutes on end; a plain connection says so at once."""
    try:
        socket.create_connection(host_port, timeout=5).close()
    except OSError as err:
        return err.strerror or str(err)
    return None
