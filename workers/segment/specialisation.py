"""Segment Anything (SAM): points and boxes on an image in, one black and white mask per prompt out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, SamModel, SamProcessor

from mmq.tasks.errors import InvalidInput
from mmq.workers.image_codec import decode_image, encode_png
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Blob, Progress, Specialisation

from .tiny import build_tiny_sam

PNG = "image/png"


@dataclass(frozen=True)
class Prompts:
    """What the model is asked, in image pixels: one mask per box, or one for the points alone."""

    points: list[list[float]]  # [x, y], shared by every mask's prompt
    labels: list[int]  # one per point: 1 on the object, 0 on the background
    boxes: list[list[float]]  # [x0, y0, x1, y1]; empty when the points alone prompt one mask

    @property
    def count(self) -> int:
        return len(self.boxes) or 1

    @property
    def multimask(self) -> bool:
        # One rule, SAM's own advice: a single point is ambiguous (a shirt, or the person in it?),
        # so ask for the 3 candidate masks and keep the one with the best predicted IoU. With more
        # points or a box the prompt is specific and SAM's single-mask output is the better one.
        return len(self.points) == 1 and not self.boxes


@dataclass(frozen=True)
class Segmentation:
    """One job, checked: its image decoded, and the prompts that fit inside it."""

    image: Image.Image
    prompts: Prompts


class SegmentSpecialisation(Specialisation):
    """Segments objects picked out by points or boxes with `SamModel` (transformers)."""

    processor: SamProcessor
    model: SamModel

    def setup(self) -> None:
        source = model_source(self.context, kind="sam", build=build_tiny_sam)
        self.processor = SamProcessor.from_pretrained(source)
        self.model = load_pretrained(SamModel, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Segmentation:
        """1. check inputs: the labels (the cheap check first), the image decoded, then every point
        and box inside it."""
        _check_labels(inputs["points"], inputs["point_labels"])
        image = decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
        return Segmentation(image, _prompts(inputs, image.size))

    def infer(self, task: str, batch: list[Segmentation], progress: Progress) -> list[dict[str, Any]]:
        outputs = []
        for job in batch:  # not batchable: a batch of one
            masks, scores = self._masks(job.image, job.prompts, progress)
            outputs.append({"masks": [Blob(encode_png(mask), PNG) for mask in masks], "scores": scores})
        return outputs

    @torch.inference_mode()
    def _masks(self, image: Image.Image, prompts: Prompts,
               progress: Progress) -> tuple[list[Image.Image], list[float]]:
        progress(0, prompts.count)  # before the image encoder, the slow part: a cancelled job stops here
        inputs = self._encode(image, prompts)  # 2. encode: resize, pad, scale the prompts alike
        embeddings = self.model.get_image_embeddings(inputs["pixel_values"])  # once for every prompt
        masks: list[Image.Image] = []
        scores: list[float] = []
        for i in range(prompts.count):  # 3. decode one mask per prompt
            mask, score = self._decode(inputs, embeddings, i, prompts.multimask)
            masks.append(mask)
            scores.append(score)
            progress(i + 1, prompts.count)
        return masks, scores

    def _encode(self, image: Image.Image, prompts: Prompts) -> BatchFeature:
        # Nested as the processor wants: [image][prompt][point][x, y], [image][prompt][point] and
        # [image][box][x0, y0, x1, y1]. The points are repeated into every box's prompt.
        points = [[prompts.points] * prompts.count] if prompts.points else None
        labels = [[prompts.labels] * prompts.count] if prompts.points else None
        boxes = [prompts.boxes] if prompts.boxes else None
        inputs = self.processor(images=image, input_points=points, input_labels=labels, input_boxes=boxes,
                                return_tensors="pt")
        return inputs.to(self.model.device, self.model.dtype)  # casts only the floating-point tensors

    def _decode(self, inputs: BatchFeature, embeddings: torch.Tensor, i: int,
                multimask: bool) -> tuple[Image.Image, float]:
        one = slice(i, i + 1)  # this prompt's row of the point batch
        output = self.model(
            image_embeddings=embeddings,
            input_points=inputs["input_points"][:, one] if "input_points" in inputs else None,
            input_labels=inputs["input_labels"][:, one] if "input_labels" in inputs else None,
            input_boxes=inputs["input_boxes"][:, one] if "input_boxes" in inputs else None,
            multimask_output=multimask,
        )
        ious = output.iou_scores[0, 0].float()  # 1 or 3 candidates
        best = int(ious.argmax())
        low_res = output.pred_masks[0, 0, best][None, None].float()  # (1, 1, h, w) logits
        # Undo the padding and the resize; a logit above 0 is inside the mask.
        (mask,) = self.processor.post_process_masks(
            [low_res], inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )
        pixels = mask[0, 0].cpu().numpy().astype(np.uint8) * 255
        return Image.fromarray(pixels), float(ious[best])


def _check_labels(points: Sequence[Sequence[float]], labels: Sequence[int]) -> None:
    """No labels means every point is on the object; otherwise exactly one per point."""
    if labels and len(labels) != len(points):
        raise InvalidInput(
            f"point_labels has {len(labels)} labels for {len(points)} points: give one per point "
            "(or none, for all on the object)",
            field="point_labels",
        )


def _prompts(job: Mapping[str, Any], size: tuple[int, int]) -> Prompts:
    """The job's prompts, each point inside the image and each box a non-empty area of it."""
    for i, point in enumerate(job["points"]):
        _check_point(f"points[{i}]", point, size)
    for i, box in enumerate(job["boxes"]):
        _check_box(f"boxes[{i}]", box, size)
    points = [list(point) for point in job["points"]]
    labels = list(job["point_labels"]) or [1] * len(points)
    return Prompts(points=points, labels=labels, boxes=[list(box) for box in job["boxes"]])


def _check_point(name: str, point: Sequence[float], size: tuple[int, int]) -> None:
    # A point names a pixel: x in [0, width), y in [0, height). Negatives are refused at submission.
    width, height = size
    x, y = point
    if x >= width or y >= height:
        raise InvalidInput(f"{name}: ({_n(x)}, {_n(y)}) is outside the {width}x{height} image",
                           field=name)


def _check_box(name: str, box: Sequence[float], size: tuple[int, int]) -> None:
    # A box's corners are pixel edges, so a box may end on the image's far edge (x1 == width):
    # [0, 0, width, height] is the whole image.
    width, height = size
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise InvalidInput(f"{name}: ({_n(x0)}, {_n(y0)}, {_n(x1)}, {_n(y1)}) is empty: x1 must be greater "
                           "than x0 and y1 greater than y0", field=name)
    if x1 > width or y1 > height:
        raise InvalidInput(f"{name}: ({_n(x0)}, {_n(y0)}, {_n(x1)}, {_n(y1)}) reaches outside the "
                           f"{width}x{height} image", field=name)


def _n(value: float) -> str:
    return f"{value:g}"  # 900.0 reads as 900, 12.5 as 12.5
