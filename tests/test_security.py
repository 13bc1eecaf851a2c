"""A pickle-serialized message on a queue is refused, never executed; the worker keeps serving."""

import os
import uuid

from kombu import Connection, Exchange, Queue

from mmq.tasks import JobStatus


class RunsACommandWhenUnpickled:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_message_is_not_executed(client, workers, sample_image, tmp_path):
    marker = tmp_path / "pwned"
    task_id = uuid.uuid4().hex
    body = ((RunsACommandWhenUnpickled(str(marker)),), {}, {"callbacks": None, "errbacks": None,
                                                          "chain": None, "chord": None})
    with Connection(workers.env["MMQ_BROKER_URL"]) as connection:
        connection.Producer().publish(
            body, serializer="pickle", exchange=Exchange("caption"), routing_key="caption",
            declare=[Queue("caption")],
            headers={"lang": "py", "task": "mmq.caption", "id": task_id, "root_id": task_id,
                     "parent_id": None, "group": None, "retries": 0, "argsrepr": "", "kwargsrepr": ""})

    # The queue is first in, first out: once a later job is done, the pickle was dealt with.
    record = client.submit("caption", image=sample_image).wait(timeout_s=120)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert not marker.exists()
    caption_log = next(w for w in workers.workers if w.specialisation == "caption").log()
    assert "ContentDisallowed" in caption_log or "Refusing to deserialize" in caption_log
