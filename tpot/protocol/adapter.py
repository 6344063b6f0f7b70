"""What both ends' tunnel protocols (tpot.server.tunnel, tpot.client.session) do alike as
adapters over the session core: send a conversation's own messages.

A mixin for a protocol with `session` (tpot.protocol.session) and LeanFrames'
`_send_message`; the conversations (visitor relays, client conversations) call these.
"""

from tpot.protocol import codec


class SendsConversationMessages:
    def send_pause(self, conversation_id):
        self._send_message(codec.encode(codec.Pause(conversation_id)))

    def send_resume(self, conversation_id):
        self._send_message(codec.encode(codec.Resume(conversation_id)))

    def send_half_close(self, conversation_id):
        self._send_message(codec.encode(codec.HalfClose(conversation_id)))

    def conversation_ended(self, conversation_id, notify):
        """The conversation is over on our side; `notify`: the peer hears X (if it may)."""
        closing = self.session.end(conversation_id, notify)
        if closing is not None:
            self._send_message(codec.encode(closing))
