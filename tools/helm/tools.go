//go:build tools

// Package tools pins the Helm 3 CLI used to render and lint the
// atlas-operator chart.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
