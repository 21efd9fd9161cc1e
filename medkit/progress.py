"""Progress bars that read well both live and in an executed notebook.

In JupyterLab tqdm draws a widget; but an executed copy written by papermill opens untrusted, and an
untrusted widget shows its first frame (``0%| | 0/30``) forever. The notebook runner therefore sets
``MEDKIT_PLAIN_PROGRESS=1`` for its kernels, and every medkit bar is then tqdm's plain-text bar, whose
last line (``100%|##########| 30/30``) is what the saved output shows. transformers' own bars (loading
and writing weights) are routed to the same plain bar there (``plain_library_bars``).
"""

from __future__ import annotations

import os
from typing import Any

PLAIN_PROGRESS_ENV = "MEDKIT_PLAIN_PROGRESS"
PLAIN_MIN_INTERVAL = 2.0  # seconds between redraws of a text bar: an executed copy keeps every redraw


def plain_progress() -> bool:
    return os.environ.get(PLAIN_PROGRESS_ENV) == "1"


def progress_bar(iterable: Any = None, **kwargs: Any):
    """``tqdm.auto.tqdm`` (a widget in a live notebook), or the plain-text bar under the notebook runner."""
    if plain_progress():
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", PLAIN_MIN_INTERVAL)
        kwargs.setdefault("ascii", True)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def progress_note(text: str) -> None:
    """A line printed without breaking a running bar (tqdm.write)."""
    from tqdm.std import tqdm

    tqdm.write(text)


def plain_library_bars() -> None:
    """Under the notebook runner, transformers' bars ("Loading weights", "Writing model shards") become
    the plain-text bar too: left as widgets they read ``0%| | 0/132`` in every executed copy. One opened
    while a medkit bar runs (the model loading inside an evaluation's bar) is switched off instead: a
    nested text bar moves the cursor with an ANSI escape, which an executed copy shows as ``[A``."""
    if not plain_progress():
        return
    from tqdm.auto import tqdm as auto_tqdm
    from tqdm.std import tqdm as text_tqdm
    from transformers.utils import logging as hf_logging

    def plain_unless_disabled(factory, args, kwargs):
        # ``factory`` is tqdm.auto's bar, or transformers' empty shim when its bars are switched off
        if factory is not auto_tqdm:
            return factory(*args, **kwargs)
        if any(not bar.disable for bar in list(text_tqdm._instances)):
            kwargs = {**kwargs, "disable": True}
        return progress_bar(*args, **kwargs)

    hf_logging.set_tqdm_hook(plain_unless_disabled)
