"""Reasoners: what answers a job. The interface is one method, `reason(job) -> Result`.

A reasoner may be called from several worker threads at once; it must honour `job.deadline`
cooperatively (stop between steps once it has passed: the worker has then already said `timeout`).
"""

from __future__ import annotations

from typing import Protocol

from blueloop.jobs import Job, Result


class Reasoner(Protocol):
    name: str

    def reason(self, job: Job) -> Result: ...


class ReasonerError(RuntimeError):
    """The reasoner cannot be set up (model missing, bad endpoint settings); one line."""


__all__ = ["Reasoner", "ReasonerError"]
