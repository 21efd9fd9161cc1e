"""Reading weights from the Hugging Face Hub where it may not answer.

The report metrics load their models (RaTEScore's NER, RadGraph, BERTScore, CheXbert) through
transformers and huggingface_hub. On a machine without a route to the Hub and without
``HF_HUB_OFFLINE=1`` set (a notebook opened in JupyterLab, ``medkit notebooks`` called directly), each
missing file costs five retries with backoff, about 30 s, and floods the cell with warnings before the
metric is reported "not computed". Where the Hub cannot be reached, the loaders read the local cache
only, so a missing file fails at once and a cached one still loads.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub's endpoint opens (once per process); False in offline mode."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def local_cache_unless_reachable():
    """Inside: downloads go ahead where the Hub answers; elsewhere huggingface_hub (and transformers,
    which asks it) run in offline mode, reading the local cache only."""
    from huggingface_hub import constants

    if hub_reachable():
        yield
        return
    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
