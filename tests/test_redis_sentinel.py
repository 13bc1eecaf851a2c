"""High availability through Sentinel: with MMQ_BROKER_URL=sentinel://… and the master's name in
MMQ_REDIS_SENTINEL_MASTER, workers and clients follow a failover to the promoted replica.

A real primary, one replica and three sentinels. The primary is SIGKILLed while jobs run: every
job whose submission returned an id succeeds. Replication is asynchronous, so a failover loses
what the old primary acknowledged but its replica lacked; the second test opens that window on
purpose (the replica's link cut, the primary still taking writes) and shows that a submission
is answered only once a replica holds it: the job the failover lost was never acknowledged.
"""

import re
import time

import pytest

from mmq.tasks import SPECIALISATIONS, BrokerUnavailable, JobNotFound, JobStatus, JobTimeout
from mmq.tasks.records.layout import ALL_JOBS_KEY, record_key

from .redis_servers import MASTER_NAME, start_sentinel_group

JOBS_BEFORE = 24  # queued before the failover, most of them still queued or running when it comes
JOBS_AFTER = 12  # submitted while it runs and after
WAIT_BOUND_S = 120  # for every job, from its submission
REFUSED_JOB = re.compile(r"\bjob ([0-9a-f]{32})\b")
# Short enough for a test, and still above every hard time limit, as the settings insist.
FAST_REDELIVERY = {
    "MMQ_VISIBILITY_TIMEOUT_S": "30", "MMQ_RESTORE_INTERVAL_S": "1",
    **{f"MMQ_{name.upper()}_SOFT_TIME_LIMIT_S": "20" for name in SPECIALISATIONS},
    **{f"MMQ_{name.upper()}_TIME_LIMIT_S": "25" for name in SPECIALISATIONS},
}


@pytest.fixture
def sentinels(tmp_path):
    group = start_sentinel_group(tmp_path / "sentinel")
    yield group
    group.stop()


def sentinel_stack(make_stack, group, **env):
    """The stack's settings pointed at the sentinels: broker, result backend and every store."""
    stack = make_stack(MMQ_BROKER_URL=group.url, MMQ_REDIS_SENTINEL_MASTER=MASTER_NAME, **env)
    del stack.env["MMQ_RESULT_BACKEND"]  # one setting: the result backend follows the broker URL
    return stack


def submit_until_accepted(client, image, refusals):
    """Submit, and again while Redis fails over (each refusal counted: the client was not told of that job)."""
    while True:
        try:
            return client.submit("caption", image=image)
        except BrokerUnavailable as exc:
            refusals.append(str(exc))


def exists(client, job_id):
    try:
        client.job(job_id)
    except JobNotFound:
        return False
    return True


def test_every_acknowledged_job_succeeds_across_a_failover(sentinels, make_stack, start_worker, sample_image,
                                                             figure):
    stack = sentinel_stack(make_stack, sentinels, **FAST_REDELIVERY)
    worker = start_worker(stack, "caption")
    client = stack.client()
    refusals: list[str] = []
    jobs = [submit_until_accepted(client, sample_image, refusals) for _ in range(JOBS_BEFORE)]
    first_done = jobs[0].wait(timeout_s=WAIT_BOUND_S)
    assert first_done.status is JobStatus.SUCCEEDED, first_done.error
    in_flight = sum(not job.status().terminal for job in jobs)
    assert in_flight  # given: jobs queued or running when the primary dies
    # Faked: the failure. The primary dies while most jobs are still queued or running.
    killed_at = time.monotonic()
    sentinels.primary.kill()
    for _ in range(JOBS_AFTER):
        jobs.append(submit_until_accepted(client, sample_image, refusals))
    back_after_s = time.monotonic() - killed_at  # the last submission was accepted by the new primary
    assert sentinels.master_port() == sentinels.replica.port

    records, missing = [], []
    for job in jobs:
        try:
            records.append(job.wait(timeout_s=WAIT_BOUND_S))
        except JobNotFound:
            missing.append(job.id)
        except JobTimeout as exc:  # what the worker saw goes with the failure (CI keeps no logs)
            raise AssertionError(f"{exc}\nworker log (end):\n{worker.log()[-6000:]}") from None
    failed = [(r.id, r.status.value, r.error) for r in records if r.status is not JobStatus.SUCCEEDED]

    assert not missing, f"acknowledged jobs lost in the failover: {missing}"
    assert not failed, failed
    assert len(records) == JOBS_BEFORE + JOBS_AFTER
    assert worker.process.poll() is None  # the same worker ran them all, reconnected to the promoted replica
    ran_twice = sum(r.step_states["caption"].attempts > 1 for r in records)
    named = [m.group(1) for m in map(REFUSED_JOB.search, refusals) if m]
    refused_but_kept = sum(exists(client, job_id) for job_id in named)  # ambiguous, as the refusal said
    figure("Sentinel failover: primary SIGKILLed under load", load=f"{len(jobs)} caption jobs",
           faults=f"primary SIGKILLed with {in_flight} jobs in flight; replica promoted",
           lost=len(missing) + len(failed), duplicates=ran_twice,
           result=f"all {len(jobs)} acknowledged jobs succeeded; {len(refusals)} submissions refused while it "
                  f"failed over (then retried), {refused_but_kept} of which exist all the same; "
                  f"{back_after_s:.1f} s from the kill to the last accept")
    client.close()


def test_a_job_is_acknowledged_only_once_a_replica_holds_it(tmp_path, make_stack, sample_image, figure):
    group = start_sentinel_group(tmp_path / "sentinel", password="mmq-secret")
    try:
        stack = sentinel_stack(make_stack, group)
        client = stack.client()
        primary = group.node(group.primary)
        kept = client.submit("caption", image=sample_image)  # the replica is in sync: confirmed at once

        # Faked: a replication link that breaks and stays broken (the replica cannot authenticate
        # again), while the sentinels still count the replica as one they would promote.
        group.cut_replica_link()
        with pytest.raises(BrokerUnavailable, match="no Redis replica confirmed"):
            client.submit("caption", image=sample_image)
        [unconfirmed] = {member.decode() for member in primary.zrange(ALL_JOBS_KEY, 0, -1)} - {kept.id}
        acknowledged_by_primary = primary.exists(record_key(unconfirmed)) and primary.llen("caption") == 2

        group.primary.kill()
        failover_s = group.wait_for_replica_promoted()
        new_primary = group.node(group.replica)

        assert acknowledged_by_primary  # the old primary had taken the job: its record and its message
        assert not new_primary.exists(record_key(unconfirmed))  # the failover lost both...
        assert new_primary.llen("caption") == 1  # ...while the acknowledged job kept its record and message
        assert client.job(kept.id).status() is JobStatus.QUEUED
        figure("Sentinel failover with the replica's link cut", load="2 caption jobs, no worker",
               faults="replication link cut, then primary SIGKILLed",
               lost=0, result=f"1 job taken by the old primary but never replicated was lost, and its "
                              f"submission had been refused; replica promoted in {failover_s:.1f} s")
        client.close()
    finally:
        group.stop()
