# syntax=docker/dockerfile:1
# Vigil's production image (SPEC §N1): one image for the web server, the Celery worker and beat;
# docker-compose.yml picks the command. Front-end files come from npm in a build stage and are
# served by WhiteNoise from the app's own origin: nothing is fetched from a CDN (SPEC §N2).

# --- Front-end packages -----------------------------------------------------------------------
FROM node:20-bookworm-slim AS frontend
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
# The same files as the Makefile's static/vendor/.copied target (keep the two lists in step),
# plus the source maps that Bootstrap and Chart.js name in a sourceMappingURL comment: the
# manifest storage of collectstatic rewrites those references and fails on a missing file.
RUN mkdir -p vendor/bootstrap vendor/bootstrap-icons vendor/htmx vendor/chartjs \
 && cp node_modules/bootstrap/dist/css/bootstrap.min.css \
       node_modules/bootstrap/dist/css/bootstrap.min.css.map \
       node_modules/bootstrap/dist/js/bootstrap.bundle.min.js \
       node_modules/bootstrap/dist/js/bootstrap.bundle.min.js.map vendor/bootstrap/ \
 && cp -r node_modules/bootstrap-icons/font/bootstrap-icons.min.css \
       node_modules/bootstrap-icons/font/fonts vendor/bootstrap-icons/ \
 && cp node_modules/htmx.org/dist/htmx.min.js vendor/htmx/ \
 && cp node_modules/chart.js/dist/chart.umd.min.js \
       node_modules/chart.js/dist/chart.umd.min.js.map vendor/chartjs/

# --- Application --------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_DEBUG=0

RUN groupadd --system --gid 10001 vigil \
 && useradd --system --uid 10001 --gid vigil --home-dir /app --no-create-home \
            --shell /usr/sbin/nologin vigil

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. pyproject.toml pins them all
# and declares no packages, so `pip install .` installs exactly the dependencies.
COPY pyproject.toml ./
RUN pip install .

# The code stays owned by root: the app user can read it but not change it.
COPY . .
COPY --from=frontend /build/vendor static/vendor

# collectstatic imports the settings, and with DJANGO_DEBUG=0 they refuse the public default key:
# a throwaway key for this one build step only (it is not kept in the image's environment).
RUN DJANGO_SECRET_KEY=build-only-collectstatic-key-not-used-at-run-time \
    python manage.py collectstatic --noinput

# The only writable places: uploads (media) and beat's schedule file (var/beat), both volumes.
RUN mkdir -p media var/beat && chown -R vigil:vigil media var

USER vigil:vigil
EXPOSE 8000

# docker-compose.yml runs migrations before this; the worker and beat override the command.
CMD ["gunicorn", "clinic.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
