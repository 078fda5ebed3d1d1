"""`make bench`: the service under load beside the textbook baseline (README "Benchmark").

bench.run drives everything; bench.baseline is the textbook implementation of the transfer
contract, bench.ceilings the framework ceilings, bench/lua the wrk scripts and bench/pgbench
the transfer's SQL for pgbench. Nothing here is imported by the service.
"""
