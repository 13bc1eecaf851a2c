"""Text to 3D meshes with Shap-E."""

from .specialisation import Text2MeshSpecialisation

__all__ = ["Text2MeshSpecialisation"]
