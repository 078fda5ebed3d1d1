"""The transfer route's direct body check (wallets.api_wallet.transfer_body) against the
serializer it stands in for (TransferIn): on any body, the same decision and the same data."""

from __future__ import annotations

import pytest
from django.conf import settings
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from wallets.api_wallet import TransferIn, transfer_body

MAX = 10_000_000

_chars = st.characters(
    codec=None, categories=("Nd", "Ll", "Lu", "Zs", "Cc", "Cs", "Po"), include_characters="\x00\n\t @."
)
_strings = st.one_of(
    st.text(_chars, max_size=8),
    st.from_regex(r"\s*[0-9]{3,7}\s*", fullmatch=True),
    st.text(_chars, min_size=60, max_size=300),
    st.just(""),
)
_values = st.one_of(
    _strings,
    st.integers(min_value=-2, max_value=MAX + 2),
    st.sampled_from([0, 1, MAX, MAX + 1, 2**63]),
    st.booleans(),
    st.floats(allow_nan=False, max_value=1e8, min_value=-1e8),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
# Bodies near the valid ones, where the two checks could part: edges of every rule.
_handle = st.from_regex(r"\s?[a-z]{1,8}@wallet\s?", fullmatch=True)
_pin = st.from_regex(r"\s?[0-9]{4,6}\s?", fullmatch=True)
_amount = st.integers(min_value=1, max_value=MAX)
_near_valid = st.fixed_dictionaries(
    {
        "to": st.one_of(_handle, _handle, st.text(_chars, min_size=62, max_size=66)),
        "amount": st.one_of(_amount, _amount, st.sampled_from([0, MAX + 1])),
        "pin": st.one_of(_pin, _pin, st.from_regex(r"[0-9]{3}|[0-9]{7}", fullmatch=True)),
    },
    optional={
        "note": st.one_of(
            st.text(st.characters(categories=("L", "N", "Zs")), max_size=10),
            st.text(_chars, max_size=10),
            st.text(st.characters(categories=("L",)), min_size=278, max_size=282),
            st.none(),
        )
    },
)
_bodies = st.one_of(
    _near_valid,
    st.dictionaries(st.sampled_from(["to", "amount", "pin", "note", "ammount", "extra"]), _values, max_size=5),
    st.fixed_dictionaries(
        {"to": _strings, "amount": st.integers(min_value=-1, max_value=MAX + 1), "pin": _strings},
        optional={"note": _values},
    ),
    _values,
)


@pytest.fixture(autouse=True)
def _max_amount(monkeypatch):
    monkeypatch.setitem(settings.WALLET, "MAX_TRANSACTION_AMOUNT", MAX)


@hypothesis_settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies)
def test_transfer_body_agrees_with_the_serializer(body):
    serializer = TransferIn(data=body)
    direct = transfer_body(body)
    event("valid" if serializer.is_valid() else "invalid")
    if serializer.is_valid():
        assert direct == dict(serializer.validated_data)
    else:
        assert direct is None, serializer.errors


@pytest.mark.parametrize(
    "body",
    [
        {"to": " bob@wallet ", "amount": 5, "pin": " 1234\n", "note": "  lunch "},
        {"to": "bob@wallet", "amount": MAX, "pin": "123456"},
        {"to": "b" * 64, "amount": 1, "pin": "0000", "note": "   "},
    ],
)
def test_valid_bodies_take_the_direct_check(body):
    serializer = TransferIn(data=body)
    assert serializer.is_valid(), serializer.errors
    assert transfer_body(body) == dict(serializer.validated_data)


@pytest.mark.parametrize(
    "body",
    [
        {"to": "bob@wallet", "amount": True, "pin": "1234"},
        {"to": "bob@wallet", "amount": 1.0, "pin": "1234"},
        {"to": "bob@wallet", "amount": 1, "pin": 1234},
        {"to": "bob@wallet", "amount": 1, "pin": "\uff11\uff12\uff13\uff14"},
        {"to": "bob@wallet", "amount": 1, "pin": "1234", "ammount": 1},
        {"to": "bob\x00@wallet", "amount": 1, "pin": "1234"},
        {"to": "  ", "amount": 1, "pin": "1234"},
        {"to": "bob@wallet", "amount": 1, "pin": "1234", "note": None},
        {"to": "bob@wallet", "amount": MAX + 1, "pin": "1234"},
        ["to", "amount"],
    ],
)
def test_invalid_bodies_are_left_to_the_serializer(body):
    assert not TransferIn(data=body).is_valid()
    assert transfer_body(body) is None
