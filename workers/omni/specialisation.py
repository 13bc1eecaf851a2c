"""Questions about a video with its sound, a sound, or an image, answered by one omni-modal model.

Qwen2.5-Omni's thinker (`Qwen/Qwen2.5-Omni-3B` by default; -7B loads the same way) reads frames,
sound and text together and writes text; its talker (speech output) is not loaded. Frames and
sound come out of the video with PyAV (`mmq.workers.footage`): the picture on screen every 1/fps s;
the processor interleaves the video's tokens with its sound's, two seconds at a time, as the model
was trained (time-aligned M-RoPE). A video without a sound track is watched silently: its frames
alone, and the answer says nothing about sound it never heard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import (
    BatchFeature,
    PreTrainedModel,
    Qwen2_5OmniThinkerForConditionalGeneration,
    StoppingCriteriaList,
)

from mmq.tasks.errors import InvalidInput, MMQError
from mmq.workers.audio import decode_audio
from mmq.workers.footage import frames_at_rate, open_video, sound_track, video_duration_s
from mmq.workers.generation import TokenProgress
from mmq.workers.image_codec import decode_image
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .processor import OmniProcessor, load_processor
from .tiny import build_tiny_omni

# The system turn of Qwen2.5-Omni's model card: the one the model was tuned to answer under.
SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
          "auditory and visual inputs, as well as generating text and speech.")
MEDIA_FIELD = {"watch": "video", "listen": "audio", "look": "image"}


@dataclass(frozen=True)
class Request:
    """One job, checked and encoded: the model's inputs and how many tokens it may add."""

    inputs: BatchFeature
    max_new_tokens: int
    with_sound: bool  # a video's sound interleaved with its frames

    @property
    def prompt_tokens(self) -> int:
        return self.inputs["input_ids"].shape[1]


@dataclass(frozen=True)
class Footage:
    """A video's frames (H x W x 3 uint8) and, when it has a sound track, its sound (16 kHz mono)."""

    frames: list[np.ndarray]
    sound: np.ndarray | None
    fps: float


class OmniSpecialisation(Specialisation):
    """`watch`, `listen` and `look` with a Qwen2.5-Omni thinker (transformers)."""

    # One job per generate call: prompts of different lengths would need padding, and an answer
    # should not depend on which other jobs it happened to be batched with.
    batchable: ClassVar[frozenset[str]] = frozenset()

    processor: OmniProcessor
    model: PreTrainedModel

    def setup(self) -> None:
        source = model_source(self.context, kind="omni", build=build_tiny_omni)
        self.processor = load_processor(source)
        self.model = load_pretrained(Qwen2_5OmniThinkerForConditionalGeneration, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Request:
        """1. check inputs (the question, then the media: streams, length) and 2. encode, with room
        left in the model's context for `max_new_tokens`."""
        question, max_new_tokens = inputs["question"], inputs["max_new_tokens"]
        self._check_question(question, max_new_tokens)
        if task == "watch":
            footage = self._footage(inputs)
            encoded = self._encode_video(question, footage)
            request = Request(encoded, max_new_tokens, footage.sound is not None)
        elif task == "listen":
            sound = decode_audio(inputs["audio"].read(), field="audio", max_duration_s=self.max_seconds)
            request = Request(self._encode(question, "audio", audio=[sound]), max_new_tokens, False)
        else:
            image = decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
            request = Request(self._encode(question, "image", images=[image]), max_new_tokens, False)
        self._check_length(request, MEDIA_FIELD[task])
        return Request(request.inputs.to(self.model.device, self.model.dtype), max_new_tokens, request.with_sound)

    def infer(self, task: str, batch: list[Request], progress: Progress) -> list[dict[str, Any]]:
        # 3. generate and 4. decode. Progress counts tokens against the most the jobs may generate.
        total = sum(request.max_new_tokens for request in batch)
        answers: list[dict[str, Any]] = []
        done = 0
        for request in batch:
            answers.append({"answer": self._generate(request, _offset(progress, done, total))})
            done += request.max_new_tokens
            progress(done, total)  # an answer that ended before its limit has done its work
        return answers

    @property
    def context_tokens(self) -> int:
        """Positions of the language model: prompt (media tokens included) plus new tokens."""
        return self.model.config.get_text_config().max_position_embeddings

    @property
    def max_seconds(self) -> float:
        """The longest sound the model hears at once (Whisper's window: 300 s for Qwen2.5-Omni);
        the feature extractor would cut anything longer off without a word."""
        return min(float(self.processor.feature_extractor.chunk_length), self.context.settings.max_audio_s)

    def _check_question(self, question: str, max_new_tokens: int) -> None:
        # A media token in the question would ask for media that is not there; a chat token would
        # end the user's turn early and speak for the assistant.
        for token in self.processor.tokenizer.all_special_tokens:
            if token in question:
                raise InvalidInput(f"question must not contain the special token {token!r}", field="question")
        if max_new_tokens >= self.context_tokens:
            raise InvalidInput(f"max_new_tokens is {max_new_tokens}, over the model's context of "
                               f"{self.context_tokens} tokens", field="max_new_tokens")
        room = self.context_tokens - max_new_tokens
        tokens = len(self.processor.tokenizer(question)["input_ids"])
        if tokens > room:
            raise InvalidInput(f"question is {tokens} tokens, over the {room} the model's context of "
                               f"{self.context_tokens} leaves beside max_new_tokens ({max_new_tokens})",
                               field="question")

    def _check_length(self, request: Request, field: str) -> None:
        room = self.context_tokens - request.max_new_tokens
        if request.prompt_tokens > room:
            lower = "fps or max_frames" if field == "video" else f"the {field}'s size"
            raise InvalidInput(
                f"{field}: with the question it makes a {request.prompt_tokens}-token prompt, over the {room} "
                f"tokens the model's context of {self.context_tokens} leaves beside max_new_tokens "
                f"({request.max_new_tokens}); lower {lower} or max_new_tokens", field=field)

    def _footage(self, inputs: Mapping[str, Any]) -> Footage:
        data, fps, max_frames = inputs["video"].read(), inputs["fps"], inputs["max_frames"]
        with open_video(data) as container:
            if not container.streams.video:
                kinds = ", ".join(s.type for s in container.streams) or "none"
                raise InvalidInput(f"video: has no video stream (its streams: {kinds})", field="video")
            seconds = video_duration_s(container)
            _check_duration(seconds, fps, max_frames, self.max_seconds)
            frames = [np.asarray(f.convert("RGB")) for f in frames_at_rate(container, fps, seconds, max_frames)]
            has_sound = bool(container.streams.audio)
        if not frames:
            raise InvalidInput("video: contains no decodable frames", field="video")
        if not has_sound:
            return Footage(frames, None, fps)
        with open_video(data) as container:
            return Footage(frames, sound_track(container, seconds), fps)

    def _encode_video(self, question: str, footage: Footage) -> BatchFeature:
        if footage.sound is None:
            return self._encode(question, "video", videos=[footage.frames], fps=footage.fps)
        # The sound is given decoded, as the video's own (index 0): the processor interleaves it
        # with the frames instead of reading the file again (which would need torchcodec).
        return self._encode(question, "video", videos=[footage.frames], fps=footage.fps, audio=[footage.sound],
                            audio_from_video_indices=[0], load_audio_from_video=True)

    def _encode(self, question: str, kind: str, **media: Any) -> BatchFeature:
        return self.processor(text=self._prompt(question, kind), return_tensors="pt", **media)

    def _prompt(self, question: str, kind: str) -> str:
        # Qwen2.5-Omni's chat format (ChatML), media first in the user's turn, as its chat template
        # writes it; a video's sound needs no placeholder of its own.
        p = self.processor
        placeholder = {"video": p.vision_bos_token + p.video_token + p.vision_eos_token,
                       "image": p.vision_bos_token + p.image_token + p.vision_eos_token,
                       "audio": p.audio_bos_token + p.audio_token + p.audio_eos_token}[kind]
        return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{placeholder}{question}<|im_end|>\n"
                "<|im_start|>assistant\n")

    @torch.inference_mode()
    def _generate(self, request: Request, on_token: Callable[[int], None]) -> str:
        report = StoppingCriteriaList([TokenProgress(on_token)])
        # Greedy whatever the checkpoint's generation config says: the same media and question
        # always give the same answer.
        tokens = self.model.generate(**request.inputs, use_audio_in_video=request.with_sound,
                                     max_new_tokens=request.max_new_tokens, do_sample=False,
                                     stopping_criteria=report)
        new = tokens[0, request.prompt_tokens:]  # the prompt, then the new tokens
        text = self.processor.decode(new, skip_special_tokens=True).strip()
        if not text:
            raise MMQError(f"omni: the model produced no text ({len(new)} tokens, all special or blank)")
        return text


def _check_duration(seconds: float, fps: float, max_frames: int, max_seconds: float) -> None:
    if seconds > max_seconds:
        raise InvalidInput(f"video: {seconds:.1f} s is over the {max_seconds:g} s the model takes in at once",
                           field="video")
    if (needed := math.ceil(seconds * fps)) > max_frames:  # a frame at 0 s, then one every 1/fps s
        raise InvalidInput(f"video: {seconds:.1f} s at fps={fps:g} is {needed} frames, over max_frames "
                           f"({max_frames}); lower fps or raise max_frames", field="video")


def _offset(progress: Progress, done: int, total: int) -> Callable[[int], None]:
    """`progress` for one job of a batch: its `n`th token is token `done + n` of `total`."""
    return lambda n: progress(done + n, total)
