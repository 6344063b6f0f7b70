"""A timer for "nothing heard for N seconds", cheap enough to touch on every packet.

Touching only records the time; the one pending call re-arms itself for the remainder
when it fires early, so busy connections never reschedule anything.
"""


class SilenceTimer:
    def __init__(self, clock, timeout, on_silence):
        self.clock = clock
        self.timeout = timeout
        self.on_silence = on_silence
        self._last = None
        self._call = None

    def start(self):
        self.touch()
        if self.timeout:
            self._call = self.clock.callLater(self.timeout, self._check)

    def touch(self):
        self._last = self.clock.seconds()

    def stop(self):
        """For good: the callback is let go as well, since its owner usually holds this
        timer, and the cycle would leave every ended visitor to the garbage collector."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.on_silence = None

    def _check(self):
        silent_for = self.clock.seconds() - self._last
        if silent_for >= self.timeout:
            self._call = None
            self.on_silence(silent_for)
        else:
            self._call = self.clock.callLater(self.timeout - silent_for, self._check)
