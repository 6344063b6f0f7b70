"""python -m bench (from the repository's root): see bench/main.py."""

import sys

from bench.common import BenchError
from bench.main import main

try:
    sys.exit(main())
except BenchError as error:
    sys.stderr.write(f"bench: {error}\n")
    sys.exit(1)
except KeyboardInterrupt:
    sys.stderr.write("bench: interrupted; everything it started has been stopped.\n")
    sys.exit(130)
