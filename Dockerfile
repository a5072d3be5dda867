# tenantscale: one binary for every role (serve, gateway, autoscale, …).
# Build: docker build -t tenantscale:0.1.0 .   (Kubernetes support is in by default; add MiniLM
# with --build-arg FEATURES=kubernetes,minilm — its model files are mounted at run time,
# nothing downloads).
# It cannot be built on the project's CI machines (no registry access for base images there);
# see docs/kubernetes.md.

FROM rust:1.95-slim-bookworm AS build
ARG FEATURES="kubernetes"
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p tenantscale ${FEATURES:+--features $FEATURES} \
 && strip target/release/tenantscale

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tenantscale --create-home tenantscale
COPY --from=build /src/target/release/tenantscale /usr/local/bin/tenantscale
USER 10001:10001
WORKDIR /var/lib/tenantscale
ENTRYPOINT ["/usr/local/bin/tenantscale"]
CMD ["--help"]
