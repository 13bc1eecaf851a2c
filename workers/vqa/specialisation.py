"""Visual question answering and long image descriptions with an image-text-to-text model.

LLaVA (`llava-hf/llava-1.5-7b-hf`, the default) is the model this is written and tested for;
BLIP-2 checkpoints with a decoder-only language model (`Salesforce/blip2-opt-2.7b`) load through
the same auto classes and get BLIP-2's own "Question: ... Answer:" prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BatchFeature,
    PreTrainedModel,
    ProcessorMixin,
    StoppingCriteriaList,
)

from mmq.tasks.errors import ConfigurationError, InvalidInput, MMQError
from mmq.workers.generation import TokenProgress
from mmq.workers.image_codec import decode_image
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_llava

DESCRIBE = "Describe this image in detail: the objects, the setting, the colours and what is happening."
# Prompts for processors without a chat template, by model type. LLaVA-1.5's is the default;
# BLIP-2's processor puts the image's query tokens in front of the text itself.
PROMPTS = {"blip-2": "Question: {question} Answer:"}
LLAVA_PROMPT = "USER: <image>\n{question} ASSISTANT:"
# The output each task returns its text under.
OUTPUT = {"answer": "answer", "describe": "description"}


@dataclass(frozen=True)
class Request:
    """One job, checked and encoded: the model's inputs and how many tokens it may add."""

    inputs: BatchFeature
    max_new_tokens: int

    @property
    def prompt_tokens(self) -> int:
        return self.inputs["input_ids"].shape[1]


class VqaSpecialisation(Specialisation):
    """Answers questions about images and describes them (transformers `AutoModelForImageTextToText`)."""

    # One job per generate call: prompts of different lengths would need padding, and an answer
    # should not depend on which other jobs it happened to be batched with.
    batchable: ClassVar[frozenset[str]] = frozenset()

    processor: ProcessorMixin
    model: PreTrainedModel

    def setup(self) -> None:
        source = model_source(self.context, kind="llava", build=build_tiny_llava)
        self.processor = AutoProcessor.from_pretrained(source)
        self.model = load_pretrained(AutoModelForImageTextToText, source, self.context.device)
        _check_decoder_only(self.model)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Request:
        """1. check inputs and 2. encode: the question free of image tokens, the image decoded, and
        the prompt with room left in the model's context for `max_new_tokens`."""
        question = inputs["question"] if task == "answer" else DESCRIBE
        self._check_question(question)
        image = decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
        encoded = self.processor(images=image, text=self._prompt(question), return_tensors="pt")
        request = Request(encoded.to(self.model.device, self.model.dtype), inputs["max_new_tokens"])
        self._check_length(request)
        return request

    def infer(self, task: str, batch: list[Request], progress: Progress) -> list[dict[str, Any]]:
        # 3. generate and 4. decode. Progress counts tokens against the most the jobs may generate.
        total = sum(request.max_new_tokens for request in batch)
        texts: list[str] = []
        done = 0
        for request in batch:
            texts.append(self._generate(request, _offset(progress, done, total)))
            done += request.max_new_tokens
            progress(done, total)  # an answer that ended before its limit has done its work
        return [{OUTPUT[task]: text} for text in texts]

    @property
    def context_tokens(self) -> int:
        """Positions of the language model: prompt (image tokens included) plus new tokens."""
        return self.model.config.get_text_config().max_position_embeddings

    def _check_question(self, question: str) -> None:
        # The processor expands each image token into the image's patch tokens: one more in the
        # question would ask for a second image that is not there.
        image_token = str(self.processor.image_token)
        if image_token in question:
            raise InvalidInput(f"question must not contain the image token {image_token!r}", field="question")

    def _check_length(self, request: Request) -> None:
        room = self.context_tokens - request.prompt_tokens
        if request.max_new_tokens > room:
            raise InvalidInput(
                f"max_new_tokens is {request.max_new_tokens}, over the {room} tokens left in the model's "
                f"context of {self.context_tokens} after the {request.prompt_tokens}-token prompt "
                "(image tokens included)",
                field="max_new_tokens",
            )

    def _prompt(self, question: str) -> str:
        # The checkpoint's own chat template where it ships one (llava-hf checkpoints do).
        if getattr(self.processor, "chat_template", None):
            turn = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            return self.processor.apply_chat_template([turn], add_generation_prompt=True, tokenize=False)
        return PROMPTS.get(self.model.config.model_type, LLAVA_PROMPT).format(question=question)

    @torch.inference_mode()
    def _generate(self, request: Request, on_token: Callable[[int], None]) -> str:
        report = StoppingCriteriaList([TokenProgress(on_token)])
        # Greedy whatever the checkpoint's generation config says: the same image and question
        # always give the same answer.
        tokens = self.model.generate(
            **request.inputs, max_new_tokens=request.max_new_tokens, do_sample=False, stopping_criteria=report
        )
        # A decoder-only model returns the prompt, then the new tokens: decode only the new ones.
        new = tokens[0, request.prompt_tokens :]
        text = self.processor.decode(new, skip_special_tokens=True).strip()
        if not text:
            raise MMQError(f"vqa: the model produced no text ({len(new)} tokens, all special or blank)")
        return text


def _offset(progress: Progress, done: int, total: int) -> Callable[[int], None]:
    """`progress` for one job of a batch: its `n`th token is token `done + n` of `total`."""
    return lambda n: progress(done + n, total)


def _check_decoder_only(model: PreTrainedModel) -> None:
    # Encoder-decoder language models (BLIP-2 with Flan-T5) return only new tokens and have no
    # fixed context length: neither the decoding nor the length check below fits them.
    if model.config.get_text_config().is_encoder_decoder:
        raise ConfigurationError(
            f"vqa: {model.config.model_type} with an encoder-decoder language model is not supported; "
            "use a LLaVA or a decoder-only BLIP-2 checkpoint (e.g. Salesforce/blip2-opt-2.7b)"
        )
