# runwatch's image: the package and its console script, nothing else.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir . && rm -rf /src
USER nobody
EXPOSE 9464
ENTRYPOINT ["runwatch"]
CMD ["serve", "--listen", "0.0.0.0:9464"]
