from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from bench.baseline.models import Entry


class TransferSerializer(serializers.Serializer):
    """API.md's transfer body: {to, amount, pin, note?}; unknown fields and an amount that is
    not a JSON integer are refused, as the contract says."""

    to = serializers.CharField(max_length=64)
    amount = serializers.IntegerField(min_value=1)
    pin = serializers.RegexField(r"^[0-9]{4,6}$", write_only=True)
    note = serializers.CharField(max_length=280, required=False, allow_blank=True, default="")

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["The body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["This field is not allowed"] for name in unknown})
        if type(data.get("amount")) is not int:
            raise serializers.ValidationError({"amount": ["Must be an integer count of minor units"]})
        return super().to_internal_value(data)

    def validate_amount(self, value: int) -> int:
        if value > settings.BASELINE["MAX_TRANSACTION_AMOUNT"]:
            raise serializers.ValidationError("Must be at most the per-transaction maximum")
        return value


class HistoryItemSerializer(serializers.ModelSerializer):
    """API.md's history item, for the sender's entry of a transfer."""

    id = serializers.UUIDField(source="transaction_id")
    type = serializers.CharField(source="transaction.type")
    direction = serializers.SerializerMethodField()
    amount = serializers.SerializerMethodField()
    currency = serializers.CharField(source="wallet.currency")
    status = serializers.SerializerMethodField()
    counterparty = serializers.SerializerMethodField()
    note = serializers.CharField(source="transaction.note")

    class Meta:
        model = Entry
        fields = [
            *("id", "type", "direction", "amount", "currency", "balance_after"),
            *("status", "counterparty", "note", "created_at"),
        ]

    def get_direction(self, entry: Entry) -> str:
        return "credit" if entry.amount > 0 else "debit"

    def get_amount(self, entry: Entry) -> int:
        return abs(entry.amount)

    def get_status(self, entry: Entry) -> str:
        return "posted"

    def get_counterparty(self, entry: Entry) -> dict | None:
        other = self.context["counterparty"]
        if other.user is None:
            return None
        return {"handle": other.handle, "name": other.user.first_name}
