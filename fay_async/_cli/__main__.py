"""``python -m fay_async._cli``: the ``fay-async`` command without the installed script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
