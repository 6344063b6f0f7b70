"""The files the tpot command reads: ~/.tpot/config.json, tpot start's file of tunnels
(~/.tpot/tpot.toml) and the PEM file of --ca.

Their contents go to the pure settings (tpot.client.settings); every error is a
ClientError whose message is one sentence naming the file.
"""

import json
import os

from tpot.client.settings import CONFIG_PATH, START_PATHS, ClientError
from tpot.client.tls import ca_certificates


def read_config_file(path=CONFIG_PATH):
    """The config file as a dict; a missing file is empty, a corrupt one an error."""
    path = os.path.expanduser(path)
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise ClientError(f"The configuration file {path} is not valid JSON; fix or remove it.") from None
    if not isinstance(config, dict):
        raise ClientError(f"The configuration file {path} must hold a JSON object.")
    return config


def read_start_file(path=None):
    """(path as shown, text) of tpot start's file: `path`, else ~/.tpot/tpot.toml, or a
    tpot.yaml or tpot.yml beside it when only that exists."""
    if path is None:
        path = next((given for given in START_PATHS if os.path.exists(os.path.expanduser(given))), START_PATHS[0])
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            return path, handle.read()
    except FileNotFoundError:
        raise ClientError(f"{path} does not exist; create it (see tpot start --help).") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ClientError(f"{path} cannot be read ({getattr(error, 'strerror', None) or error}).") from None


def read_ca_file(path):
    """The PEM text of --ca FILE, checked to hold at least one readable certificate."""
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            pem = handle.read()
    except OSError as error:
        raise ClientError(f"The CA file {path} cannot be read ({error.strerror or error}).") from None
    try:
        ca_certificates(pem)
    except ValueError:
        raise ClientError(f"The CA file {path} does not hold a valid PEM certificate.") from None
    return pem
