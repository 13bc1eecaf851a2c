"""Planning pipelines from requests in words, with a causal LM under a grammar."""

from .specialisation import PlanSpecialisation

__all__ = ["PlanSpecialisation"]
