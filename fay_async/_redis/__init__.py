"""The Redis implementations behind :mod:`fay_async.redis` (an optional extra)."""
