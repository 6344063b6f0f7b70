"""The TPoT/1 session rules both ends share, free of I/O.

`ConversationIds` hands out conversation ids on the server's side.
"""

from tpot.protocol.codec import MAX_CONVERSATION_ID


class ConversationIds:
    """Ids 1..maximum, handed out round-robin so a freed id is reused as late as possible.

    Late messages for a conversation that just ended are thus ignored rather than
    delivered to a new visitor that happened to get the same id.
    """

    def __init__(self, maximum=MAX_CONVERSATION_ID):
        self.maximum = maximum
        self._in_use = set()
        self._last = 0

    def __len__(self):
        return len(self._in_use)

    def allocate(self):
        if len(self._in_use) >= self.maximum:
            return None
        candidate = self._last
        while True:
            candidate = candidate % self.maximum + 1
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                self._last = candidate
                return candidate

    def release(self, conversation_id):
        self._in_use.discard(conversation_id)
