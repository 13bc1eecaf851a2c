"""mmq's execution side: specialisations (load once, run many), model sources, device pinning.

Heavy imports (torch, transformers, diffusers) happen only inside worker pool processes.
"""

from .specialisation_base import ArtifactInput, Blob, ModelContext, Progress, Specialisation

__all__ = ["ArtifactInput", "Blob", "ModelContext", "Progress", "Specialisation"]
