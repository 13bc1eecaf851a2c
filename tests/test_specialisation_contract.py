"""One contract for every specialisation: inputs are checked in `prepare`, the model runs in `infer`,
and `run` (the base class's) prepares every job of a batch before any inference."""

import inspect
from pathlib import Path

import pytest

from mmq.tasks import InvalidInput, Settings
from mmq.tasks.catalogue import TASKS
from mmq.tasks.specialisation_specs import SPECIALISATIONS
from mmq.workers.registry import specialisation_class
from mmq.workers.specialisation_base import ModelContext, Specialisation

CONTRACT = {"setup", "prepare", "infer", "run", "preparer"}  # preparer: `prepare` for a prepare process


@pytest.mark.parametrize("name", sorted(SPECIALISATIONS))
def test_every_specialisation_checks_its_inputs_in_prepare_with_the_base_signature(name):
    cls = specialisation_class(name)

    assert cls.run is Specialisation.run, f"{name} overrides run(); prepare() and infer() are its parts"
    for method in ("prepare", "infer"):
        assert getattr(cls, method) is not getattr(Specialisation, method), f"{name} has no {method}()"
        assert _parameters(getattr(cls, method)) == _parameters(getattr(Specialisation, method)), (
            f"{name}.{method} must take the base class's parameters")
    public = {n for c in cls.__mro__ if issubclass(c, Specialisation) and c is not Specialisation
              for n, v in vars(c).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert public <= CONTRACT, (
        f"{name} has public methods {sorted(public - CONTRACT)} beside the contract: checks go in prepare()")


@pytest.mark.parametrize("name", sorted(SPECIALISATIONS))
def test_which_tasks_a_specialisation_serves_is_said_by_the_catalogue_alone(name):
    cls = specialisation_class(name)
    served = {task.name for task in TASKS.values() if task.specialisation == name}

    assert served, f"no task in the catalogue runs on {name}"
    assert cls.batchable <= served
    assert not {"name", "tasks"} & set(dir(cls)), f"{name} keeps its own copy of the task map"


class _Recorded(Specialisation):
    """The smallest specialisation: it refuses an empty text and records what its model is given.
    A stand-in: what is tested is the base class's `run`, not a model."""

    def __init__(self) -> None:
        super().__init__(ModelContext(model="none", device="cpu", cache_dir=Path("."), settings=Settings()))
        self.inferred: list[list[str]] = []

    def prepare(self, task, inputs):
        if not inputs["text"]:
            raise InvalidInput("text must not be empty", field="text")
        return inputs["text"].upper()

    def infer(self, task, batch, progress):
        self.inferred.append(batch)
        return [{"text": text} for text in batch]


def test_a_bad_job_in_a_batch_is_refused_before_any_inference():
    specialisation = _Recorded()

    with pytest.raises(InvalidInput, match="text must not be empty") as refused:
        specialisation.run("shout", [{"text": "a"}, {"text": ""}, {"text": "c"}], lambda done, total: None)

    assert refused.value.field == "text"
    assert specialisation.inferred == []


def test_infer_gets_what_prepare_made_of_each_job_in_order():
    specialisation = _Recorded()

    outputs = specialisation.run("shout", [{"text": "a"}, {"text": "b"}], lambda done, total: None)

    assert outputs == [{"text": "A"}, {"text": "B"}]
    assert specialisation.inferred == [["A", "B"]]


def _parameters(method):
    return [(p.name, p.kind) for p in inspect.signature(method).parameters.values()]
