# Build or reuse the test control plane, then run every check CI runs.
.PHONY: testenv test lint crd run-simulator

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
