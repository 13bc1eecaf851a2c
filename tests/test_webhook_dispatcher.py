"""Webhook dispatchers sharing one outbox (two gateways, or a gateway and `mmq webhooks`): the
second joins the consumer group the first made, and each event is delivered once.

Real: redis-server, two dispatchers each on an event loop of its own, a local HTTP receiver.
"""

import json
import logging

from tests.test_outages_background import QUEUED_HOOK, dispatching
from tests.test_webhooks import Receiver, wait_for


def test_a_second_dispatcher_joins_the_group_and_each_event_is_delivered_once(make_stack, caplog):
    stack = make_stack(MMQ_WEBHOOK_SECRET="shared-secret")
    receiver = Receiver(fail_first=0)
    with caplog.at_level(logging.INFO, logger="mmq.clients.webhook_dispatcher"):
        halts = [dispatching(stack.settings), dispatching(stack.settings)]  # the second finds the group made
        try:
            with stack.client() as client:
                for n in range(6):
                    client.submit("text2image", prompt=f"kite {n}", webhook={"url": receiver.url,
                                                                            "events": QUEUED_HOOK})
            wait_for(lambda: len(receiver.received) >= 6)
        finally:
            for halt in halts:
                halt()
            receiver.server.shutdown()

    deliveries = [json.loads(body)["id"] for _, _, body in receiver.received]
    assert len(deliveries) == len(set(deliveries)) == 6, deliveries
    problems = [r.getMessage() for r in caplog.records
                if r.name == "mmq.clients.webhook_dispatcher" and r.levelno >= logging.WARNING]
    assert problems == []
