# rerank-cluster image: rerank-node, rerank-coordinator and rerank-bench, with the bundled
# all-MiniLM-L6-v2 model. `docker compose up` runs a 3-node cluster (see docker-compose.yml).
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-pip unzip libdnnl-dev \
 && rm -rf /var/lib/apt/lists/*
COPY . .
ENV RERANK_REQUIRE_ONEDNN=1
RUN cargo build --release --bin rerank-node --bin rerank-coordinator --bin rerank-bench \
 && scripts/fetch_default_model.sh /opt/models/all-MiniLM-L6-v2

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libdnnl2 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin rerank
WORKDIR /app
COPY --from=build /src/target/release/rerank-node /src/target/release/rerank-coordinator /src/target/release/rerank-bench /usr/local/bin/
COPY --from=build /opt/models /app/models
COPY configs /app/configs
USER rerank
ENV HOST=0.0.0.0 \
    PORT=8000 \
    MODEL_PATH=/app/models/all-MiniLM-L6-v2
EXPOSE 8000
# Any HTTP answer from /health counts as up for the coordinator (503 = no healthy node yet);
# a node answers 200 once its model is loaded.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD curl -fs "http://127.0.0.1:${PORT}/health" >/dev/null || exit 1
CMD ["rerank-node"]
