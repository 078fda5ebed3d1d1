"""The textbook implementation of the transfer contract (API.md `POST /wallet/transfer`), the
baseline that `make bench` measures the service against.

It is the design card done the obvious way: a DRF viewset behind a router, simplejwt's
default JWTAuthentication (which loads the user from the database on every request), the
money moved inside `transaction.atomic()` with both wallets locked by `select_for_update`
in id order, and the balances changed by ORM `save()`s. Its own tables live in its own
database (`bench_baseline`) on the same PostgreSQL server as the service. Two PIN schemes:
the design card's keyed hash (HMAC-SHA256 with a pepper) at `/api/v1/wallet/transfer`, and
the bcrypt variant (cost 12) at `/bcrypt-pin/api/v1/wallet/transfer`.
"""
