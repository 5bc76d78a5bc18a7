//go:build !unix

package group

// fileIdentity is empty where the file system gives no device and inode.
func fileIdentity(string) string { return "" }
