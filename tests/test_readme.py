"""The README's catalogue lists every task with its queue and default model, and every pipeline."""

from pathlib import Path

from mmq.tasks import PIPELINES, SPECIALISATIONS, TASKS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def catalogue_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows[cells[0].strip("`")] = line
    return rows


def test_every_task_is_listed_with_its_queue_and_default_model():
    rows = catalogue_rows()
    for task in TASKS.values():
        assert task.name in rows, f"README catalogue misses the task {task.name}"
        row = rows[task.name]
        assert f"`{task.specialisation}`" in row
        default = SPECIALISATIONS[task.specialisation].default_model
        assert f"`{default}`" in row or "same pipeline" in row or "none:" in row, task.name
        for name in task.inputs:
            if name != "model":  # shared by every task of a model family: documented once
                assert f"`{name}`" in row, (task.name, name)


def test_the_model_input_is_documented():
    assert "`model`" in README.split("| task | queue |")[0].rsplit("## Catalogue", 1)[1]


def test_every_pipeline_is_listed():
    rows = catalogue_rows()
    assert set(PIPELINES) <= set(rows)
