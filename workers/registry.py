"""Specialisation name → class, imported only in the process that serves it."""

from __future__ import annotations

import importlib

from mmq.tasks.errors import ConfigurationError
from mmq.tasks.specialisation_specs import SPECIALISATIONS

from .specialisation_base import Specialisation

_CLASSES = {
    "caption": "mmq.workers.caption:CaptionSpecialisation",
    "diffusion": "mmq.workers.diffusion:DiffusionSpecialisation",
    "speech": "mmq.workers.speech:SpeechSpecialisation",
    "summarize": "mmq.workers.seq2seq:SummarizeSpecialisation",
    "translate": "mmq.workers.seq2seq:TranslateSpecialisation",
    "clip": "mmq.workers.clip:ClipSpecialisation",
    "sentence": "mmq.workers.sentence:SentenceSpecialisation",
    "media": "mmq.workers.video:MediaSpecialisation",
    "vqa": "mmq.workers.vqa:VqaSpecialisation",
    "depth": "mmq.workers.depth:DepthSpecialisation",
    "segment": "mmq.workers.segment:SegmentSpecialisation",
    "features": "mmq.workers.features:FeaturesSpecialisation",
    "speak": "mmq.workers.speak:SpeakSpecialisation",
    "compose": "mmq.workers.compose:ComposeSpecialisation",
    "text2video": "mmq.workers.text2video:Text2VideoSpecialisation",
    "text2mesh": "mmq.workers.text2mesh:Text2MeshSpecialisation",
    "omni": "mmq.workers.omni:OmniSpecialisation",
    "plan": "mmq.workers.plan:PlanSpecialisation",
}


def known_specialisation(name: str) -> str:
    """`name`, if a worker can serve it, else `ConfigurationError`; nothing imported. The Celery
    parent of a prefork worker checks with this: its model libraries may touch CUDA as they import,
    and a pool process forked from a parent that did cannot use CUDA at all ("Cannot re-initialize
    CUDA in forked subprocess": every prefork worker on an H100, 2026-12-06)."""
    if name not in SPECIALISATIONS or name not in _CLASSES:
        raise ConfigurationError(f"unknown specialisation {name!r}; known: {', '.join(sorted(_CLASSES))}")
    return name


def specialisation_class(name: str) -> type[Specialisation]:
    module_name, _, class_name = _CLASSES[known_specialisation(name)].partition(":")
    return getattr(importlib.import_module(module_name), class_name)
