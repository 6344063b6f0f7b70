"""Who the visitor really is when the server sits behind a proxy it trusts.

Pure functions: `forwarded_client` reads X-Forwarded-For the way proxies append to it
(right-most entries were added by the proxies nearest to us) and returns the first
address, from the right, that is not a trusted proxy.  `parse_networks` and `address_in`
also serve the client's --allow-ip (tpot.client.policy).  `plain_address` gives IPv4 peers
of a dual-stack socket their usual form.
"""

import ipaddress


def plain_address(host):
    """`host`, or the IPv4 address it maps if it is IPv4-mapped IPv6: a dual-stack socket
    reports IPv4 peers as `::ffff:192.0.2.1`, and limits, proxy matching, logs and the
    client should all see the `192.0.2.1` the visitor is."""
    if ":" not in host:
        return host
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return host if mapped is None else str(mapped)


def format_address(address):
    """`host:port`, with an IPv6 host in brackets, for logs."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_networks(cidrs, option="--trusted-proxy"):
    """CIDR strings to networks; ValueError names the one that is not valid (and `option`)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{option} {cidr!r} is not an address or CIDR range") from None
    return tuple(networks)


def address_in(address, networks):
    """Whether `address` (text; an IPv4-mapped IPv6 address counts as IPv4) is in one of `networks`."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def forwarded_client(peer, header, networks):
    """The visitor's address per X-Forwarded-For, or None to use `peer` itself."""
    if not networks or not header or not address_in(peer, networks):
        return None
    for entry in reversed([part.strip() for part in header.split(",") if part.strip()]):
        if not address_in(entry, networks):
            try:
                # A proxy on a dual-stack socket may forward the mapped form too.
                return plain_address(str(ipaddress.ip_address(entry.strip("[]"))))
            except ValueError:
                return None
    return None
