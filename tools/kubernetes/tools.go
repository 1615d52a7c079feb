//go:build tools

// Package tools pins the Kubernetes control-plane binaries used by the
// atlas-operator integration tests. Nothing imports this package; the blank
// imports only keep the requirements in go.mod/go.sum under `go mod tidy`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
