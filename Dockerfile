# telepipe: one image, every role (`serve`, `ingest`, `processor <stage>`, `egress`, `sandbox`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends libmediainfo-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release -p telepipe && cp target/release/telepipe /telepipe

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libmediainfo0v5 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /telepipe /usr/local/bin/telepipe
USER 65534:65534
ENTRYPOINT ["telepipe"]
CMD ["serve", "--listen", "0.0.0.0:8081"]
