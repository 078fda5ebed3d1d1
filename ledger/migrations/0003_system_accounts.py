"""The system accounts through which money enters and leaves the ledger. They may go
negative: gateway clearing is owed what customers paid in, so the sum of every balance
stays zero."""

from django.conf import settings
from django.db import migrations

SYSTEM_ACCOUNTS = ("gateway_clearing", "bank_payouts", "fees", "cashback_pool", "adjustments")


def create(apps, schema_editor):
    Account = apps.get_model("ledger", "Account")
    currency = settings.WALLET["CURRENCY"]
    for code in SYSTEM_ACCOUNTS:
        Account.objects.get_or_create(code=code, defaults={"kind": "system", "currency": currency})


def remove(apps, schema_editor):
    apps.get_model("ledger", "Account").objects.filter(code__in=SYSTEM_ACCOUNTS, entries__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_database_rules")]

    operations = [migrations.RunPython(create, remove)]
