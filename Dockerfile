# syntax=docker/dockerfile:1.7
# The operator as a container image: a static (musl) binary, the CA bundle
# and the non-root user 65532, FROM scratch. Build (BuildKit, e.g. Docker >= 23
# or `docker buildx`), from the repository root:
#
#   docker build -t registry.example.com/platform/tenant-capacity-operator:0.1.0 .
#
# Multi-arch: `docker buildx build --platform linux/amd64,linux/arm64 ...`
# (each platform's builder compiles natively for its own musl target).
# See docs/container-image.md. hack/image.sh builds the same image without a
# container engine: it reads the final stage below (every instruction in it
# must be one that script knows) and checks the result on the local cluster.

ARG RUST_VERSION=1.95

# --- build -------------------------------------------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder

# musl-tools: the C compiler for ring's (rustls') C and assembly parts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*

RUN rustup target add "$(uname -m)-unknown-linux-musl"

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src

# Registry and target caches survive between builds; the binary is copied out
# of the cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && CC="musl-gcc" RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "${target}" --bin tenant-capacity-operator \
 && mkdir -p /out \
 && cp "target/${target}/release/tenant-capacity-operator" /out/ \
 && (ldd /out/tenant-capacity-operator 2>&1 | grep -Eq 'not a dynamic executable|statically linked') \
 && /out/tenant-capacity-operator --version

# --- run ---------------------------------------------------------------------
# scratch: no shell, no libc, no package manager. Only the binary, the CA
# bundle (Debian's, from the build stage) and /etc/passwd and /etc/group with
# the nonroot user 65532 (hack/image/rootfs). Time zones are compiled into the
# binary (jiff).
FROM scratch

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tenant-capacity-operator" \
      org.opencontainers.image.description="Elastic per-tenant capacity for real-time communications products" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# PATH explicitly: Dockerfile builders add this default to an image without it.
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
COPY --chown=0:0 --chmod=0444 hack/image/rootfs/etc/passwd /etc/passwd
COPY --chown=0:0 --chmod=0444 hack/image/rootfs/etc/group /etc/group
COPY --from=builder --chown=0:0 --chmod=0444 /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder --chown=0:0 --chmod=0555 /out/tenant-capacity-operator /usr/local/bin/tenant-capacity-operator

USER 65532:65532
EXPOSE 8443 8081
ENTRYPOINT ["/usr/local/bin/tenant-capacity-operator"]
CMD ["run"]
