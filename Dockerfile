# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim non-root image.
#   docker build -t order-saga .
#   docker run --rm order-saga --help

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config zlib1g-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches tests/it \
 && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
 && echo 'fn main() {}' > benches/http.rs && echo 'fn main() {}' > benches/saga.rs && echo '' > tests/it/main.rs \
 && cargo build --release --locked --bin order-saga \
 && rm -rf src benches tests
COPY src src
COPY migrations migrations
COPY schemas schemas
COPY sagas sagas
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin order-saga

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 order-saga \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin order-saga
COPY --from=build /src/target/release/order-saga /usr/local/bin/order-saga
COPY sagas /etc/order-saga/sagas
ENV ORDER_SAGA_SAGAS_DIR=/etc/order-saga/sagas \
    ORDER_SAGA_HTTP_ADDR=0.0.0.0:8080 \
    ORDER_SAGA_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/order-saga"]
CMD ["serve"]
