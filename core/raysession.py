"""Ray's lifetime for the stages that fan work out to Ray tasks (specialists, ``specens infer
--workers``): the one place that decides which cluster a run joins."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

# What a Ray task that raised is retried for: failures that another attempt may not meet (a lost
# file system or connection, a device or memory error, an injected fault). A user error
# (specens.core.errors.SpecensError: a bad file, a diverging run) fails the same way every time.
RETRIED_EXCEPTIONS = [OSError, RuntimeError, MemoryError, EOFError]

# Ray reads this when it is imported, so it is set here, and this module is imported before Ray
# by every stage that uses it. Ray's log de-duplication would fold the workers' per-epoch lines
# ("specialist 1: epoch 2 ...", "specialist 2: epoch 2 ...", alike but for their numbers) into one
# line and a colour-coded "[repeated 2x across cluster]" notice: every specialist's line is kept.
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@contextlib.contextmanager
def ray_session():
    """Join the cluster of ``ray job submit`` (``RAY_ADDRESS``), use a session the caller already
    started, or start a local one on loopback and shut it down afterwards."""
    import ray

    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not sys.stdout.isatty():  # workers' lines go to a file or a pipe: prefixed, without colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        # address="local": a new instance even when another is running on this machine (a bare
        # ray.init() would join the latest `ray start` cluster it finds in /tmp/ray). Ray's notice
        # that it chose token authentication (its secure default for a new local cluster) and its
        # start-up INFO lines are kept out of the user's output.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=True,
            logging_level=logging.WARNING,
        )
    try:
        yield
    finally:
        ray.shutdown()
