// The test node's two images, as static Go programs without dependencies: the pod
// sandbox ("pause") and a small HTTP server for test pods. testenv/node/image.sh packs
// each as an OCI image layout archive for `ctr images import`.
module rentedhost-operator/testenv/node/images

go 1.26.0
