"""The Celery app's configuration: the settings that make Celery safe for GPU jobs."""

from concurrent.futures import ThreadPoolExecutor

from celery import group

from mmq.tasks import SPECIALISATIONS, Settings
from mmq.tasks.celery_app import make_celery


def test_json_only_late_acks_and_one_message_at_a_time(tmp_path):
    conf = make_celery(Settings.from_env({"MMQ_DATA_DIR": str(tmp_path)})).conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_send_task_events and conf.result_expires == 7 * 24 * 3600


def test_each_task_is_routed_to_its_specialisation_queue_with_its_limits(tmp_path):
    conf = make_celery(Settings.from_env({"MMQ_DATA_DIR": str(tmp_path)})).conf
    assert conf.task_routes["mmq.caption"] == {"queue": "caption", "routing_key": "caption"}
    assert conf.task_routes["mmq.text2image"] == {"queue": "diffusion", "routing_key": "diffusion"}
    assert {q.name for q in conf.task_queues} == set(SPECIALISATIONS)
    assert conf.task_annotations["mmq.text2image"] == {"soft_time_limit": 600, "time_limit": 720}


def test_visibility_timeout_outlasts_every_hard_limit_wherever_celery_reads_it(tmp_path):
    settings = Settings.from_env({"MMQ_DATA_DIR": str(tmp_path), "MMQ_VISIBILITY_TIMEOUT_S": "5000"})
    conf = make_celery(settings).conf
    longest = max(limits["time_limit"] for limits in conf.task_annotations.values())
    for options in (conf.broker_transport_options, conf.result_backend_transport_options):
        assert options["visibility_timeout"] == 5000 > longest


def test_a_message_lands_on_its_specialisation_queue_only(make_stack):
    stack = make_stack()  # no workers: the message stays where routing put it
    client = stack.client()
    client.submit("text2image", prompt="a house", steps=1, width=64, height=64)
    redis = stack.redis_client()
    assert (redis.llen("diffusion"), redis.llen("caption")) == (1, 0)



def test_sending_from_any_thread_subscribes_to_no_result_channel(make_stack):
    """The Redis result backend SUBSCRIBEs to each sent task's result channel, one backend (and one
    pub/sub connection) per thread. Nothing here reads Celery results, and each result's garbage
    collection unsubscribed again: once its Redis was gone, for 20 s of retries (CI, 2026-12-06)."""
    stack = make_stack()  # no workers: only the sending is looked at
    app, redis = make_celery(stack.settings), stack.redis_client()
    sent = []

    def send() -> None:
        sent.append(app.signature("mmq.text2image", kwargs={}).set(queue="diffusion").apply_async())
        # A group (parallel steps; a fan-out) subscribes to each member for its ready barrier.
        both = group(app.signature("mmq.text2image", kwargs={}).set(queue="diffusion") for _ in range(2))
        sent.extend(both.apply_async().results)

    send()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda _: send(), range(4)))
        listening = redis.client_list(_type="pubsub")  # while the sending threads are alive
    assert redis.llen("diffusion") == len({result.id for result in sent}) == 15
    assert listening == []
