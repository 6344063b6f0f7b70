"""tpot.protocol.names: what a tunnel may be called, and why not."""

import pytest

from tpot.protocol.names import NAME_RULE, RESERVED_NAMES, name_problem, random_name, valid_name


@pytest.mark.parametrize("name", ["a-", "demo-", "x" * 23 + "-"])
def test_a_trailing_hyphen_is_not_a_dns_label(name):
    assert name_problem(name) == NAME_RULE


@pytest.mark.parametrize("name", ["xn--80ak6aa92e", "xn--a", "ab--cd", "zz--z"])
def test_hyphens_in_the_third_and_fourth_places_are_reserved_for_idns(name):
    assert "xn--" in name_problem(name)


@pytest.mark.parametrize("name", ["a--b", "abc--d", "my-app", "x-na"])
def test_other_hyphens_are_fine(name):
    assert name_problem(name) is None


def test_the_reserved_names_are_valid_names_that_look_like_the_servers_own():
    assert {"www", "api", "admin", "localhost", "create-tpot", "connect-tpot"} <= RESERVED_NAMES
    assert all(valid_name(name) for name in RESERVED_NAMES)


def test_random_names_are_never_reserved_or_idn_like():
    names = {random_name() for _ in range(2000)}
    assert not names & RESERVED_NAMES
    assert all(name_problem(name) is None for name in names)
