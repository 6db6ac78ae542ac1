"""Keep the ML libraries' console chatter (tqdm bars while loading) off the user's terminal.

diffusers and transformers draw "Loading pipeline components" / "Loading weights" bars on stderr
when a model loads. Our callers report progress themselves (CLI status line, GUI progress), so
loading runs inside :func:`quiet_loading`, which turns the bars off and restores the previous
global setting afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    restore = []
    for lib in (diffusers_logging, transformers_logging):
        if lib.is_progress_bar_enabled():
            lib.disable_progress_bar()
            restore.append(lib)
    try:
        yield
    finally:
        for lib in restore:
            lib.enable_progress_bar()
