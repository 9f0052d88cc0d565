"""The ``fay-async`` command-line application, built on the public API of fay_async.

``main`` parses the command line (:mod:`.main`) and :mod:`.run` runs one command with
its signals and exit codes. The commands: :mod:`.commands` (research, status, output,
stop), :mod:`.batchrun` (the resumable batch, with :mod:`.journal`, :mod:`.inputs`
and :mod:`.progress`), :mod:`.fleetbatch` (a batch shared by workers through Redis)
and :mod:`.emulate` (the emulator served); :mod:`.target` picks the service or the
built-in emulator.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
