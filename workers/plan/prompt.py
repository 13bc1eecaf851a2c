"""The planner's prompt: the catalogue as call signatures, the files, and worked examples.

Written as chat turns for the checkpoint's own chat template: a system message that says how a plan
is written and what may be called, then two example requests answered with plans, then the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mmq.tasks.fields import Kind
from mmq.tasks.planning.calls import Call, bindable, calls
from mmq.tasks.taskspec import TaskSpec

SYSTEM = """You turn a request into a plan that runs AI tasks on the user's files.
Write one line per result: NAME = TERM. A TERM calls a task and picks one of its outputs:
task(input=TERM, ...).output. An input's TERM is a supplied file (input.FILE), another task's
output of the right kind, or a short quoted text such as "a watercolour painting".
If no task can do what is asked, answer: none: REASON.

The tasks (inputs -> outputs):
{catalogue}"""

EXAMPLES: tuple[tuple[Mapping[str, Kind], str, str], ...] = (
    ({"voice": Kind.AUDIO}, "Turn my voice note into a picture and tell me what it shows.",
     ("picture = text2image(prompt=transcribe(audio=input.voice).text).image\n"
      "description = caption(image=text2image(prompt=transcribe(audio=input.voice).text).image).text")),
    ({"photo": Kind.IMAGE}, "Make this photo look like an oil painting.",
     'painting = image2image(image=input.photo, prompt="an oil painting").image'),
    ({}, "Book me a flight to Paris.", "none: no task books travel"),
)


def signature(call: Call) -> str:
    """`caption(image=<image>) -> .text (text): Describe an image in one sentence`."""
    args = ", ".join(f"{n}=<{f.kind.value}{' list' if f.many else ''}>" for n, f in call.args)
    outs = ", ".join(f".{name} ({spec.describe()})" for name, spec in call.outputs())
    return f"{call.name}({args}) -> {outs}: {gist(call.task.description)}"


def gist(description: str) -> str:
    """A description's first clause: the prompt is read for every plan, so it is kept short."""
    plain = re.sub(r" \([^)]*\)", "", description.rstrip("."))  # no "(BLIP)", "(MP4, H.264)"
    return re.split(r": |; |\. ", plain, maxsplit=1)[0]


def system_message(tasks: Mapping[str, TaskSpec]) -> str:
    lines = [signature(c) for c in calls(tasks) if all(bindable(f) for _, f in c.args)]
    return SYSTEM.format(catalogue="\n".join(lines))


def user_message(request: str, files: Mapping[str, Kind]) -> str:
    supplied = ", ".join(f"input.{name} ({kind.value})" for name, kind in files.items()) or "none"
    return f"Files: {supplied}\nRequest: {request}"


def messages(tasks: Mapping[str, TaskSpec], request: str, files: Mapping[str, Kind]) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system_message(tasks)}]
    for example_files, example_request, plan in EXAMPLES:
        turns += [{"role": "user", "content": user_message(example_request, example_files)},
                  {"role": "assistant", "content": plan}]
    return [*turns, {"role": "user", "content": user_message(request, files)}]
