"""`make chaos`: money under torture (`python -m chaos.run`; README "Chaos").

The harness is its own supervisor of the whole service: an embedded PostgreSQL in a
throwaway directory, the migrations, gunicorn and the background workers as child processes.
It also plays every outside party over real HTTP: the customers and merchants (many
concurrent clients), the payment gateway (signed webhooks), the bank (chaos.bank: the payout
API the service calls, and signed callbacks) and the merchants' webhook receiver
(chaos.receiver). While the traffic runs it kills processes and restarts PostgreSQL
(chaos.service); afterwards it proves from the database that no money was created, lost or
moved twice (chaos.verify).

Modules: run (the entry point and the report), net (HTTP with retries until a definitive
answer), traffic (the operations and what their answers promise), service (the processes),
bank, receiver, verify.
"""
