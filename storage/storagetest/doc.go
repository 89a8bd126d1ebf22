// Package storagetest is the conformance suite every storage.Store passes:
// the contract in storage.Store's doc comment, checked against a real
// backend.
package storagetest
