"""What a server needs to be one node of a cluster (`--redis`): the name store in Redis
(redis_store), the heartbeat (heartbeat), the peer port and its handshake (peers, hop),
and what the cluster looks like to /api/status and /metrics (view)."""
