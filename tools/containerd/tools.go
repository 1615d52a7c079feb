//go:build tools

// Package tools pins containerd, the container runtime of the real node in
// the atlas-operator integration tests (with Debian's runc and CNI plugins),
// and ctr, which imports the locally built images into it.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
