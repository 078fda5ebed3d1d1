"""A payment attempt is credited at most once, enforced by PostgreSQL: the deposit that
credits attempt X carries the ledger reference `payment_attempt:X` (wallets.topups), and no
two ledger transactions may carry the same such reference. The attempt's one-to-one link to
its transaction already stops one attempt pointing at two credits; this index also stops a
second credit being posted at all, linked or not.

The index lives in wallets because only wallets knows what a payment attempt is; the ledger
table it constrains is a dependency of this app, never the other way round.
"""

from django.db import migrations

CREATE = """
CREATE UNIQUE INDEX ledger_txn_payment_attempt_once ON ledger_transaction (reference)
 WHERE reference LIKE 'payment\\_attempt:%';
"""

DROP = "DROP INDEX ledger_txn_payment_attempt_once;"


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0002_staff_groups"),
        ("ledger", "0005_entry_account_single_index"),
    ]

    operations = [migrations.RunSQL(CREATE, DROP)]
