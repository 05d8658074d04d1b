# runwatch's image: the package and its console script, nothing else.
# The base is pinned by digest (python:3.11-slim-bookworm) so a rebuild gets the same bytes;
# renew it with `docker buildx imagetools inspect python:3.11-slim-bookworm`.
FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b AS assets
# the view's uPlot, from npm at the version web/package-lock.json pins (scripts/build-assets)
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY web/package.json web/package-lock.json ./web/
COPY scripts/build-assets ./scripts/build-assets
RUN bash scripts/build-assets

FROM python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY exporter ./exporter
COPY --from=assets /src/exporter/app/static/vendor ./exporter/app/static/vendor
# the mixin the package ships (exporter/mixin links to these)
COPY prometheus/rules ./prometheus/rules
COPY prometheus/tests ./prometheus/tests
COPY grafana/dashboards ./grafana/dashboards
RUN pip install --no-cache-dir . && rm -rf /src
USER nobody
EXPOSE 19464
ENTRYPOINT ["runwatch"]
CMD ["serve", "--web.listen-address", ":19464"]
