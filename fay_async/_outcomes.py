"""What the end of a wait means for the caller: the info of a completed research, or an error.

Pure functions from what the manager learnt (a terminal status, a stop's outcome) to what
the caller gets, so that every way of waiting reports an ending the same way.
"""

from __future__ import annotations

import math

from ._models import ConversationInfo, ResearchStatus
from ._stops import StopJob
from .exceptions import (
    NotFoundError,
    ResearchFailedError,
    ResearchStoppedError,
    ResearchTimeoutError,
)

__all__ = ["describe_limit", "outcome", "timeout_outcome"]


def describe_limit(seconds: float) -> str:
    """``within 300 s``, or ``without a limit``."""
    return "without a limit" if math.isinf(seconds) else f"within {seconds:g} s"


def outcome(info: ConversationInfo) -> ConversationInfo:
    """``info`` if the research COMPLETED; raise for FAILED and STOPPED."""
    if info.status is ResearchStatus.FAILED:
        raise ResearchFailedError(
            f"research {info.request_id} failed: {info.error_message or 'no error message'}",
            request_id=info.request_id,
            error_message=info.error_message,
        )
    if info.status is ResearchStatus.STOPPED:
        raise ResearchStoppedError(
            f"research {info.request_id} was stopped", request_id=info.request_id
        )
    return info


def timeout_outcome(
    timed_out: ResearchTimeoutError, job: StopJob, limit: float
) -> ResearchTimeoutError:
    """The error for a research that timed out, given how stopping it went."""
    request_id = timed_out.request_id
    late = f"research {request_id} did not finish {describe_limit(limit)}"
    last = f"(last status: {timed_out.last_status or 'unknown'})"
    stopped = job.result
    if isinstance(job.error, NotFoundError):
        return ResearchTimeoutError(
            f"{late} {last} and the service does not know it (the stop was answered 404): "
            "there was nothing to stop",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=False,
        )
    if stopped is None:
        return ResearchTimeoutError(
            f"{late} {last} and stopping it failed ({job.error}): it may still be running, "
            "and stays in active_requests",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=False,
        )
    if stopped.status is ResearchStatus.STOPPED:
        return ResearchTimeoutError(
            f"{late} {last}: cancelled due to timeout, it was stopped",
            request_id=request_id,
            last_status=timed_out.last_status,
            stopped=True,
        )
    return ResearchTimeoutError(
        f"{late} {last}; the stop was answered with the status {stopped.status}, so it may "
        "not be stopped",
        request_id=request_id,
        last_status=stopped.status,
        stopped=False,
    )
