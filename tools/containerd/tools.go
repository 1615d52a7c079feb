//go:build tools

// Package tools pins containerd, the container runtime of the real node in
// the atlas-operator integration tests (with Debian's runc and CNI plugins),
// ctr, which imports the locally built images into it, and the runc shim it
// starts for each pod.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
