"""Snapshot jobs: 202 ``{jobId}`` now, a gzipped JSON Lines file and a ``job:finished`` webhook later.

The result is built when the job completes (after ``job_delay_seconds``), from a callable the
route passes in, so it reflects the data at completion time as Shoptet's would.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulator.config import SimulatorConfig
from simulator.store import Entity, EshopData
from simulator.timefmt import now, shoptet_time
from simulator.webhooks import Webhooks

RESULT_PATH = "/api-results"
RESULT_VALIDITY = timedelta(hours=24)


@dataclass
class Job:
    job_id: str
    eshop_id: int
    endpoint: str
    created: datetime
    status: str = "pending"
    completed: datetime | None = None
    result: bytes | None = None

    def to_api(self, public_url: str) -> Entity:
        done = self.completed
        return {
            "jobId": self.job_id,
            "endpoint": self.endpoint,
            "creationTime": shoptet_time(self.created),
            "completionTime": shoptet_time(done) if done else None,
            "duration": f"{(done - self.created).total_seconds():.3f}" if done else None,
            "status": self.status,
            "resultUrl": f"{public_url.rstrip('/')}{RESULT_PATH}/{self.job_id}.jsonl.gz" if done else None,
            "validUntil": shoptet_time(done + RESULT_VALIDITY) if done else None,
            "log": None,
        }


def gzip_json_lines(entities: Iterable[Entity]) -> bytes:
    lines = (json.dumps(entity, ensure_ascii=False, separators=(",", ":")) + "\n" for entity in entities)
    return gzip.compress("".join(lines).encode(), compresslevel=5)


class Jobs:
    def __init__(self, config: SimulatorConfig, webhooks: Webhooks) -> None:
        self.config = config
        self.webhooks = webhooks
        self.jobs: dict[str, Job] = {}
        self._rng = random.Random(f"{config.seed}:jobs")
        self._tasks: set[asyncio.Task[None]] = set()

    def _new_id(self) -> str:
        alphabet = string.ascii_lowercase + string.digits
        while True:
            job_id = "".join(self._rng.choice(alphabet) for _ in range(7))
            if job_id not in self.jobs:
                return job_id

    def start(self, eshop: EshopData, endpoint: str, build: Callable[[], Iterable[Entity]]) -> Job:
        job = Job(self._new_id(), eshop.eshop_id, endpoint, now())
        self.jobs[job.job_id] = job
        task = asyncio.get_running_loop().create_task(self._complete(eshop, job, build))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _complete(self, eshop: EshopData, job: Job, build: Callable[[], Iterable[Entity]]) -> None:
        await asyncio.sleep(self.config.job_delay_seconds)
        job.result = gzip_json_lines(build())
        job.completed = now()
        job.status = "completed"
        self.webhooks.emit(eshop, "job:finished", job.job_id)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
