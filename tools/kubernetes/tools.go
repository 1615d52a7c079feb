//go:build tools

// Package tools pins the Kubernetes binaries used by the atlas-operator
// integration tests: the control plane, and the real node's kubelet,
// scheduler and proxy. Nothing imports this package; the blank
// imports only keep the requirements in go.mod/go.sum under `go mod tidy`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
