"""Which tunnel a new visitor connection of a pooled name goes to.

A pool's members (docs/PROTOCOL.md, `pool`) each take new connections by their open
conversations as this node sees them: a member here by its tunnel's conversations, a
member on another node by the connections this node forwarded to it and has open.  The
member with the fewest gets the connection; members tied take turns.  Every node balances
what reaches it, so a load balancer that spreads visitors over the nodes spreads them over
the members too, with no shared counter to update per connection.
"""

from collections import OrderedDict

# Names whose turn is remembered; past this many the least recently balanced is forgotten
# (it starts again at its first member), which bounds the memory of visited names.
REMEMBERED_NAMES = 4096


class Balancer:
    def __init__(self, load, remembered=REMEMBERED_NAMES):
        self.load = load  # route -> the open conversations this node counts for it
        self.remembered = remembered
        self._turns = OrderedDict()  # name -> ties broken so far

    def pick(self, routes):
        """The route a new connection goes to, of `routes` (those of one name); None if empty."""
        if len(routes) < 2:
            return routes[0] if routes else None
        # Sorted: a store's members come in no set order, and turns need a fixed one.
        ordered = sorted(routes, key=lambda route: route.lease)
        loads = [self.load(route) for route in ordered]
        least = min(loads)
        tied = [route for route, load in zip(ordered, loads) if load == least]
        return tied[self._turn(ordered[0].name) % len(tied)]

    def _turn(self, name):
        turn = self._turns.pop(name, 0)
        self._turns[name] = turn + 1
        if len(self._turns) > self.remembered:
            self._turns.popitem(last=False)
        return turn
