"""The fixtures recorded from the reference Node.js implementation, in ../shared/fixtures.

CI lays `shared/` beside the checkout; TPOT_FIXTURES overrides the location.
"""

import json
import os
from pathlib import Path

FIXTURES = Path(os.environ.get("TPOT_FIXTURES") or Path(__file__).resolve().parents[3] / "shared" / "fixtures")

SESSION = json.loads((FIXTURES / "tpot1-node-session.json").read_text(encoding="utf-8"))
AUTH_VECTORS = json.loads((FIXTURES / "tpot1-auth-vectors.json").read_text(encoding="utf-8"))["vectors"]
