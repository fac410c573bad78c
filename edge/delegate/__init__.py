"""The device side of the blue loop: delegated jobs out, results back, every ask answered once.

`Delegate.submit()` stores a job and queues its request (keyframes from the camera's ring, bounded
in count and bytes, and context: recent events, counts) on the outbox's bulk priority, so alerts
always go first and a broker outage delays a job without losing it. Results come back on
`…/blue/result` and answer the ask through the control surface; a job with no result is sent again
(same job id) and, at its deadline, answered with an error. Jobs live in SQLite: a restart forgets
none.
"""

from edge.delegate.client import (
    DEADLINE_S,
    MAX_ATTEMPTS,
    RESEND_AFTER_S,
    Delegate,
    FinishedJob,
)
from edge.delegate.frames import MAX_FRAMES, MAX_JPEG_BYTES, encode_frames, spread
from edge.delegate.results import JobResult, ResultError, parse_result

__all__ = [
    "DEADLINE_S",
    "MAX_ATTEMPTS",
    "MAX_FRAMES",
    "MAX_JPEG_BYTES",
    "RESEND_AFTER_S",
    "Delegate",
    "FinishedJob",
    "JobResult",
    "ResultError",
    "encode_frames",
    "parse_result",
    "spread",
]
