//go:build tools

// Package tools pins the etcd server used as the storage backend of the
// kube-apiserver in the atlas-operator integration tests. The main package of
// etcd is the root of the go.etcd.io/etcd/server/v3 module.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
