# provenroute's worker / API image, for users with an image registry (see docker-compose.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 provenroute
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY infra ./infra
COPY simulator ./simulator
COPY streams ./streams
COPY projections ./projections
COPY api ./api
COPY datasets ./datasets
COPY container ./container
RUN pip install --no-cache-dir .
USER provenroute
ENTRYPOINT ["provenroute"]
CMD ["--help"]
