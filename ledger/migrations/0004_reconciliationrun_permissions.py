from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_system_accounts")]

    operations = [
        migrations.AlterModelOptions(
            name="reconciliationrun",
            options={"permissions": [("run_reconciliation", "Can run a reconciliation from the admin or the API")]},
        ),
    ]
