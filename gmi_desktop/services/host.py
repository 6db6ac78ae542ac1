"""Opening the model host for a face that may not import ``engine`` itself (the GUI's GPU lane).

:func:`open_host` is called on the thread that will use the host. It loads the model libraries
there (``warm=True``) and then *freezes* the garbage collector's view of everything they created
(``gc.freeze``): the engine calls ``gc.collect()`` whenever it releases a model, and a full
collection over the ~500 000 objects torch, diffusers, transformers and open_clip create at import
takes about a second on a busy 2-core machine — a second in which no other Python thread runs, so
the window would freeze at every model switch of a spec build. Import-time objects live as long as
the process anyway; models loaded later are collected as before.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gmi_desktop.engine.host import ModelHost


def open_host(settings: Any, *, warm: bool = True) -> "ModelHost":
    """A fresh :class:`~gmi_desktop.engine.host.ModelHost` for ``settings`` (no model loaded).
    Everything of ``engine`` is imported here, on the calling (worker) thread."""
    from gmi_desktop.engine.host import ModelHost

    host = ModelHost(settings)
    if warm:
        import gmi_desktop.engine.clip  # noqa: F401 - torch, open_clip
        import gmi_desktop.engine.generation  # noqa: F401 - diffusers
        import gmi_desktop.engine.interrogator  # noqa: F401 - transformers
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: F401 - lazy modules

        gc.freeze()
    return host
