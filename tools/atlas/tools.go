//go:build tools

// Package tools pins the open-source (community) Atlas CLI. ariga.io/atlas/cmd/atlas
// is a separate module from ariga.io/atlas; requiring both here keeps the CLI
// and the library it is built against at matching versions.
package tools

import (
	_ "ariga.io/atlas/cmd/atlas"
	_ "ariga.io/atlas/sql/migrate"
)
