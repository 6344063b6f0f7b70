"""TPoT: Transport Packets over Tunnels, a self-hosted HTTP tunnel speaking TPoT/1."""

__version__ = "0.3.0"
