# syntax=docker/dockerfile:1
# podlife images, one target each: podlife-target, podlife-operator, kubectl-podlife.
#   docker build --target podlife-target -t localhost/podlife-target:0.1.0 .
# Without a Docker engine, e2e/images/build produces the same contents: the same static
# binary at /usr/local/bin, user 65532, that binary as the entrypoint, /tmp and OCI labels.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# crt-static: self-contained binaries for scratch images (build scripts stay dynamic).
RUN RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bins \
 && mkdir -p /rootfs/tmp && chmod 1777 /rootfs/tmp

FROM scratch AS base
ARG VERSION=0.1.0
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
WORKDIR /
USER 65532:65532
LABEL org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.source=https://github.com/podlife/podlife \
      org.opencontainers.image.licenses=Apache-2.0

FROM base AS podlife-target
LABEL org.opencontainers.image.title=podlife-target
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/podlife-target /usr/local/bin/podlife-target
ENTRYPOINT ["/usr/local/bin/podlife-target"]

FROM base AS podlife-operator
LABEL org.opencontainers.image.title=podlife-operator
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/podlife-operator /usr/local/bin/podlife-operator
ENTRYPOINT ["/usr/local/bin/podlife-operator"]

FROM base AS kubectl-podlife
LABEL org.opencontainers.image.title=kubectl-podlife
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/kubectl-podlife /usr/local/bin/kubectl-podlife
ENTRYPOINT ["/usr/local/bin/kubectl-podlife"]
