"""Input validation shared by every API view: strict serializers that reject unknown fields,
and the one definition of a money amount."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses fields it does not declare, so a typo such as `ammount`
    fails loudly (400 validation_failed) instead of being ignored."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["This field is not allowed"] for name in unknown})
        return super().to_internal_value(data)


@extend_schema_field({"type": "integer", "minimum": 1, "description": "Minor units (paise for INR)"})
class AmountField(serializers.Field):
    """A positive integer count of minor units, at most MAX_TRANSACTION_AMOUNT.

    JSON numbers only: a string ("100"), a fraction (1.5), a float that happens to be whole
    (100.0) and a boolean are all refused, because each is a client bug that would otherwise
    be silently rounded or coerced.
    """

    default_error_messages = {
        "type": "Must be an integer count of minor units (a JSON number without a fraction)",
        "positive": "Must be greater than zero",
        "max": "Must be at most {max}, the per-transaction maximum",
    }

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("type")
        if data <= 0:
            self.fail("positive")
        maximum = settings.WALLET["MAX_TRANSACTION_AMOUNT"]
        if data > maximum:
            self.fail("max", max=maximum)
        return data

    def to_representation(self, value):
        return int(value)


class EmptySerializer(StrictSerializer):
    """For routes that take no body: anything sent is refused."""


class StringField(serializers.CharField):
    """A CharField that takes JSON strings only. DRF's CharField turns 1234 into "1234",
    so a PIN or password sent as a number would pass silently; here it is refused."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class EmailStringField(serializers.EmailField):
    """An EmailField that takes JSON strings only (see StringField)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class PinField(StringField):
    """The transaction PIN: a string of 4 to 6 ASCII digits (never a number, which would lose
    leading zeros; `\\d` would also take other scripts' digits)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "The transaction PIN: 4-6 digits, as a string")
        kwargs.setdefault("validators", [RegexValidator(r"^[0-9]{4,6}$", "Must be 4 to 6 digits")])
        super().__init__(**kwargs)
