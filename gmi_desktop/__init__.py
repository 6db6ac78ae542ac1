"""GMI Desktop: rank local Stable Diffusion checkpoints by how well they can make a reference image.

Layers (see docs/ARCHITECTURE.md): ``core`` (numpy math, typed errors) <- ``store`` (files, catalog,
settings) and ``engine`` (torch land) <- ``services`` <- ``cli`` / ``gui`` / ``integrations``.
"""

__version__ = "0.1.0"
