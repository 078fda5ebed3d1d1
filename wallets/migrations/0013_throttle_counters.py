"""The rate limits' counter table (wallets.models.throttles), UNLOGGED: counters need no
durability, and writes that skip the WAL make a check cheap. fillfactor 70 leaves room on each
page, so an increment is a HOT update in place (no indexed column changes)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0012_withdrawals_staff_groups"),
    ]

    operations = [
        migrations.CreateModel(
            name="ThrottleCounter",
            fields=[
                ("key", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("hits", models.BigIntegerField()),
                ("window_ends", models.DateTimeField()),
            ],
            options={
                "default_permissions": (),
            },
        ),
        migrations.RunSQL(
            "ALTER TABLE wallets_throttlecounter SET UNLOGGED, SET (fillfactor = 70)",
            "ALTER TABLE wallets_throttlecounter SET LOGGED, RESET (fillfactor)",
        ),
    ]
