"""``fay-async emulator``: serve the Fay emulator on a local port until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys

from fay_async import _config  # the environment variables' names: no public alternative

__all__ = ["run_emulator", "webhook_problem"]


def run_emulator(args: argparse.Namespace) -> int:
    from fay_async.testing import FayEmulator, serve_forever  # noqa: PLC0415 - only here

    if not args.api_key.strip() or any(c.isspace() for c in args.api_key):
        print("fay-async: --api-key must be a non-empty string without spaces", file=sys.stderr)
        return 2
    secret = args.webhook_secret or os.environ.get(_config.WEBHOOK_SECRET_ENV) or None
    problem = webhook_problem(args.webhook_url, secret, args.webhook_secret)
    if problem is not None:
        print(f"fay-async: {problem}", file=sys.stderr)
        return 2
    emulator = FayEmulator(
        api_keys=[args.api_key],
        rate_limits=args.tier,
        speed=args.speed,
        seed=args.seed,
        webhook_url=args.webhook_url,
        webhook_secret=secret if args.webhook_url else None,
    )

    listening = False

    def ready(base_url: str) -> None:
        nonlocal listening
        listening = True
        tier = args.tier or "no"
        print(f"Fay emulator on {base_url} (speed x{args.speed:g}, {tier} rate limits)")
        print(f"export {_config.BASE_URL_ENV}={base_url} {_config.API_KEY_ENV}={args.api_key}")
        if args.webhook_url:
            print(f"Webhooks to {args.webhook_url}, signed with the webhook secret")
        print("Press Ctrl-C to stop.", flush=True)

    try:
        serve_forever(
            emulator, host=args.host, port=args.port, log_level=args.log_level, on_ready=ready
        )
    except ModuleNotFoundError as error:
        print(f"fay-async: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        if listening:  # bound already: not an address problem, so not one line
            raise
        print(f"fay-async: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


def webhook_problem(url: str | None, secret: str | None, given: str | None) -> str | None:
    """What is wrong with ``fay-async emulator``'s webhook options, if anything."""
    if url is None:
        return None if given is None else "--webhook-secret needs --webhook-url"
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest.split("/")[0]:
        return f"--webhook-url must be an http:// or https:// URL, got {url!r}"
    if secret is None or not secret.strip():
        return (
            f"--webhook-url needs a secret to sign with: pass --webhook-secret or set "
            f"{_config.WEBHOOK_SECRET_ENV}"
        )
    return None
