"""mmq's producers: the Python SDK and the `mmq` CLI. Never imports `mmq.workers` or torch."""

from .artifact import Artifact
from .client import Client, Job

__all__ = ["Artifact", "Client", "Job"]
