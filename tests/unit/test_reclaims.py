"""Reclaim tokens kept between runs (tpot.client.reclaims), in a temporary folder."""

import os
import stat

from tpot.client.reclaims import ReclaimTokens
from tpot.client.settings import parse_address

SERVER = parse_address("http://localhost:3000", "server")
OTHER = parse_address("https://tpot.example.com", "server")
TOKEN = "aBcD_efgh-1234567890xyzXYZ"


def test_a_token_is_kept_per_server_and_name_where_only_this_user_reads_it(tmp_path):
    tokens = ReclaimTokens(tmp_path / "names")
    assert tokens.save(SERVER, "demo", TOKEN)
    assert tokens.load(SERVER, "demo") == TOKEN
    assert tokens.load(SERVER, "other") is None and tokens.load(OTHER, "demo") is None
    folder = tmp_path / "names"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    (kept,) = folder.iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.name.startswith("demo-")


def test_a_newer_token_replaces_the_old_and_forget_removes_it(tmp_path):
    tokens = ReclaimTokens(tmp_path)
    tokens.save(SERVER, "demo", TOKEN)
    tokens.save(SERVER, "demo", TOKEN[::-1])
    assert tokens.load(SERVER, "demo") == TOKEN[::-1] and len(list(tmp_path.iterdir())) == 1
    tokens.forget(SERVER, "demo")
    assert tokens.load(SERVER, "demo") is None
    tokens.forget(SERVER, "demo")  # nothing to forget is fine


def test_what_is_not_a_token_is_neither_kept_nor_read(tmp_path):
    tokens = ReclaimTokens(tmp_path)
    assert not tokens.save(SERVER, "demo", "short") and not tokens.save(SERVER, "demo", "bad token\n" * 3)
    tokens.save(SERVER, "demo", TOKEN)
    (kept,) = tmp_path.iterdir()
    kept.write_text("\x1b[2J" * 10)
    assert tokens.load(SERVER, "demo") is None


def test_a_symlink_in_place_of_a_token_is_not_followed(tmp_path):
    tokens = ReclaimTokens(tmp_path)
    tokens.save(SERVER, "demo", TOKEN)
    (kept,) = tmp_path.iterdir()
    elsewhere = tmp_path.parent / "elsewhere-token"
    elsewhere.write_text(TOKEN)
    kept.unlink()
    os.symlink(elsewhere, kept)
    assert tokens.load(SERVER, "demo") is None


def test_a_folder_that_cannot_be_written_costs_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    tokens = ReclaimTokens(blocker / "names")
    assert not tokens.save(SERVER, "demo", TOKEN) and tokens.load(SERVER, "demo") is None
