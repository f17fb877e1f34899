"""The data condition keys: defaults, and one clear line for each bad value."""

from __future__ import annotations

import pytest

from cot_transplant.config import load_config
from cot_transplant.errors import UserError


def test_defaults_change_nothing():
    data = load_config(None, []).data
    assert (data.split, data.argument, data.planted_fraction, data.planted_position, data.planted_seed) == \
        ("random", "original", 0.0, "end", 0)
    ok = load_config(None, ["data.split=grouped", "data.argument=none", "data.planted_fraction=0.25",
                            "data.planted_position=start", "data.planted_seed=3"]).data
    assert (ok.split, ok.argument, ok.planted_fraction, ok.planted_position, ok.planted_seed) == \
        ("grouped", "none", 0.25, "start", 3)


@pytest.mark.parametrize("override,key", [
    ("data.split=by-question", "data.split"),
    ("data.argument=masked", "data.argument"),
    ("data.planted_fraction=1.5", "data.planted_fraction"),
    ("data.planted_fraction=-0.1", "data.planted_fraction"),
    ("data.planted_position=middle", "data.planted_position"),
    ("data.planted_seed=x", "data.planted_seed"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(UserError, match=f"config key '{key}'"):
        load_config(None, [override])


def test_planted_fraction_on_already_planted_synthetic_rows_is_refused():
    with pytest.raises(UserError, match="data.synthetic.planted rows are planted already"):
        load_config(None, ["data.synthetic.planted=true", "data.planted_fraction=0.5"])
    load_config(None, ["data.synthetic.planted=true", "data.planted_fraction=0.5", "data.path=x.csv"])
