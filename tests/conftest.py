"""Session-wide test set-up."""

from __future__ import annotations

import signal

# A shell starts a background job (`make test &`, a CI step run in the background) with
# SIGINT ignored, and Python then leaves it ignored: Ctrl-C would never reach the tests of
# the interrupt guard or the CLI processes they start (an ignored signal stays ignored
# across exec). Those tests are about what fibergrade does on Ctrl-C, so give this process,
# and through it every process it starts, the ordinary Ctrl-C behaviour.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
