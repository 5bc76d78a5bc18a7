// Package layout has no code: its tests check the module's import
// boundaries, which go build alone does not enforce.
package layout
