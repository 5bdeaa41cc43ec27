# Build or reuse the test control plane, then run every check CI runs.
.PHONY: testenv test lint crd run-simulator protocol

testenv:
	testenv/build.sh

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test: testenv lint
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" cargo test

crd:
	cargo run -q -- crd > crds/rentedhost.yaml
	cp crds/rentedhost.yaml charts/rentedhost-operator/crds/rentedhost.yaml

# The never-rent-twice protocol under 200 random interleavings (release build).
protocol: testenv
	KUBEBUILDER_ASSETS="$$(testenv/build.sh)" PROTOCOL_SEEDS=$${PROTOCOL_SEEDS:-0..200} \
		cargo test --release --test e2e protocol -- --nocapture
