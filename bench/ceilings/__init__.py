"""The ceilings of the stack, served by their own gunicorn with the service's gunicorn
settings: a bare Django view and DRF + JWT views that write nothing (bench.ceilings.views)."""
