# The wallet service's image: gunicorn by default; docker-compose.yml runs the migrations
# and the worker from the same image with other commands.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/var/lib/wallet

WORKDIR /app

# Dependencies first, so that a change to the code does not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Never root: a system user that owns only DATA_DIR (gunicorn's metrics files live there).
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin wallet \
    && mkdir -p /var/lib/wallet \
    && chown wallet /var/lib/wallet
USER wallet

EXPOSE 8000
CMD ["gunicorn", "-c", "walletsite/gunicorn_conf.py"]
