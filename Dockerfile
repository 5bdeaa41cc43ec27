# The operator's image, for machines with a Docker engine or BuildKit. `make image` builds
# the same image without one (scripts/image.sh).
#
#   docker build -t rentedhost-operator:0.1.0 .
#
# The binary is glibc, statically linked (`crt-static`): it builds from crates.io and the
# Rust image alone (musl would need another target and its C toolchain for `ring`), and
# glibc >= 2.34 resolves names without loading NSS modules.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The commit `--version` names, when the build context has no .git.
ARG RENTEDHOST_COMMIT
ENV RENTEDHOST_COMMIT=${RENTEDHOST_COMMIT}
RUN RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=/usr/local/cargo/registry/src=/cargo --remap-path-prefix=/src=/src" \
      cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/rentedhost-operator /out/rentedhost-operator \
 && mkdir -p /out/etc/ssl/certs /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /out/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /out/etc/group \
 && chmod 1777 /out/tmp

# No shell, no package manager: the binary, CA certificates and a passwd entry.
FROM scratch
COPY --from=build /out/ /
ENV PATH=/ SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/rentedhost-operator"]
CMD ["run"]
