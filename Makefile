# Build or reuse the test control plane, then run every check CI runs.
.PHONY: testenv test lint deny crd simulator run-simulator protocol release image demo demo-stop demo-check fuzz bench

testenv:
	testenv/build.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# Licenses, bans, sources and advisories (the RustSec snapshot in ../shared/advisory-db).
deny:
	scripts/deny.sh

test: testenv lint deny image
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" cargo test --workspace

# The release binary: statically linked glibc (the image has no libc), stripped, LTO, with
# paths that do not depend on this machine (a reproducible build).
RELEASE_RUSTFLAGS := -C target-feature=+crt-static \
	--remap-path-prefix=$${CARGO_HOME:-$$HOME/.cargo}/registry/src=/cargo \
	--remap-path-prefix=$(CURDIR)=/src
release:
	RUSTFLAGS="$(RELEASE_RUSTFLAGS)" cargo build --release --locked --target x86_64-unknown-linux-gnu

# The container image, without a container engine: target/image/oci and its archive.
image: release
	scripts/image.sh

# The provider simulator (its own crate, never in the operator's image), for the demo and the
# bench; `make run-simulator` serves it on 127.0.0.1:8090.
simulator:
	cargo build --release --locked -p xds-simulator

run-simulator: simulator
	target/release/xds-simulator

crd:
	cargo run -q -- crd --kind rented-host > crds/rentedhost.yaml
	cargo run -q -- crd --kind rented-host-pool > crds/rentedhostpool.yaml
	cargo run -q -- crd --kind rented-host-budget > crds/rentedhostbudget.yaml
	cp crds/rentedhost.yaml crds/rentedhostpool.yaml crds/rentedhostbudget.yaml charts/rentedhost-operator/crds/

# The never-rent-twice protocol under 200 random interleavings (release build).
protocol: testenv
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" PROTOCOL_SEEDS=$${PROTOCOL_SEEDS:-0..200} \
		cargo test --release --test e2e protocol -- --nocapture

# The operator's main job on this machine alone (see scripts/demo.sh); it keeps running.
demo:
	scripts/demo.sh

demo-stop:
	scripts/demo.sh stop

# What CI checks of the demo: Ready, a second run, and a clean stop.
demo-check:
	scripts/demo-check.sh

# Fuzzing with cargo-fuzz (nightly toolchain; `cargo install cargo-fuzz`): each target for
# FUZZ_SECONDS. `make test` runs the same properties with proptest.
FUZZ_SECONDS ?= 60
fuzz:
	for target in decode decision; do \
		cargo +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

# The controller at scale against the API-server floor and the protocol floor, at the
# provider's rate limit, and on a large account (see bench/scale.rs for the settings, e.g.
# BENCH_N=100,1000 BENCH_STEADY_SECONDS=0 BENCH_LARGE_ACCOUNT=0; writes bench/results.md),
# then the chaos test with 50 objects (CHAOS_OBJECTS). About 30 minutes.
bench: testenv release simulator
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" BENCH_SIMULATOR=target/release/xds-simulator cargo bench --profile dev --bench scale
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" CHAOS_OBJECTS=$${CHAOS_OBJECTS:-50} \
		cargo test --test e2e chaos -- --nocapture
