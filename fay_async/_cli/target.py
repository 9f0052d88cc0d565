"""Where a command's researches live: the Fay service, or the built-in emulator."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Final

import attrs

from fay_async import (
    BudgetStore,
    FayClient,
    PollPolicy,
    RateLimits,
    ResearchManager,
    _config,  # the environment variables' names: no public alternative
)

from .run import UsageError, say

__all__ = ["EMULATOR_SPEED", "Target", "make_manager", "open_target", "poll_policy"]

#: With ``--emulator``, emulated time (research durations, timeouts, hourly budgets)
#: runs this many times faster than real time: a default research takes about a second.
EMULATOR_SPEED: Final = 60.0


@attrs.frozen
class Target:
    """A connected client, and how fast its clock runs compared with real time."""

    client: FayClient
    speed: float
    emulated: bool

    @property
    def name(self) -> str:
        """Where the researches live: the API origin, or the in-process emulator."""
        return "the built-in emulator" if self.emulated else self.client.base_url

    def real_seconds(self, seconds: float | None) -> float | None:
        """Real seconds for ``seconds`` of (possibly emulated) research time."""
        return None if seconds is None else seconds / self.speed


def _missing_key(args: argparse.Namespace) -> bool:
    key = args.api_key if args.api_key is not None else os.environ.get(_config.API_KEY_ENV)
    return not (key or "").strip()


def _rate_limits(tier: str | None, speed: float) -> RateLimits | None:
    if tier is None:
        return None
    preset = RateLimits.FREE if tier == "free" else RateLimits.PRO
    return attrs.evolve(preset, window=preset.window / speed)


@contextlib.asynccontextmanager
async def open_target(
    args: argparse.Namespace,
    *,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    budget: BudgetStore | None = None,
) -> AsyncIterator[Target]:
    """The client for this invocation: ``--emulator`` or the service (key from the env).

    With ``webhook_url``, the emulator delivers its webhooks there, signed with
    ``webhook_secret`` (the service sends them where its dashboard says). ``budget`` is
    where the ``--tier`` budget lives (shared by a fleet of workers).
    """
    tier = getattr(args, "tier", None)
    delivering: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
    if args.emulator:
        from fay_async.testing import (  # noqa: PLC0415 - only --emulator needs it
            DEFAULT_API_KEY,
            FayEmulator,
        )

        say("using the built-in Fay emulator (no account, no network): every output is made up")
        emulator = FayEmulator(
            api_keys=[DEFAULT_API_KEY],
            speed=EMULATOR_SPEED,
            rate_limits=tier,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret if webhook_url else None,
        )
        if webhook_url is not None:
            delivering = emulator.delivering()
        client = emulator.client(rate_limits=_rate_limits(tier, EMULATOR_SPEED))
        speed, emulated = EMULATOR_SPEED, True
    else:
        if _missing_key(args):
            raise UsageError(
                f"no Fay API key: set {_config.API_KEY_ENV} (export {_config.API_KEY_ENV}=...) "
                "or pass --api-key; or try it offline with --emulator"
            )
        client = FayClient(
            args.api_key,
            base_url=args.base_url,
            rate_limits=_rate_limits(tier, 1.0),
            budget=budget if tier is not None else None,
        )
        speed, emulated = 1.0, False
    async with client, delivering:
        yield Target(client=client, speed=speed, emulated=emulated)


def poll_policy(args: argparse.Namespace, target: Target) -> PollPolicy:
    """The documented polling schedule, on the target's clock, or a fixed interval."""
    interval = getattr(args, "poll_interval", None)
    if interval is not None:
        interval /= target.speed  # seconds of research time, like --timeout
        return PollPolicy(
            pending_first=interval,
            pending_growth=1.0,
            pending_max=interval,
            processing_first=interval,
            processing_max=interval,
            retry_first=interval,
            retry_max=max(interval, 30.0 / target.speed),
        )
    default = PollPolicy()
    scale = 1.0 / target.speed
    return attrs.evolve(
        default,
        pending_first=default.pending_first * scale,
        pending_max=default.pending_max * scale,
        processing_first=default.processing_first * scale,
        processing_max=default.processing_max * scale,
        retry_first=default.retry_first * scale,
        retry_max=default.retry_max * scale,
    )


def make_manager(args: argparse.Namespace, target: Target) -> ResearchManager:
    """A manager for ``target`` that polls on ``--poll-interval`` or the documented schedule."""
    return ResearchManager(target.client, poll_policy=poll_policy(args, target))
