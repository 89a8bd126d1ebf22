// Package storage defines where binvault keeps its archive: a flat, keyed
// object store with whole-object writes. Backends live in subpackages
// (storage/file, storage/s3) and all pass one conformance suite
// (storage/storagetest).
//
// Every object carries a SHA-256 of its content in a 48-byte trailer (see
// checksum.go and docs/archive-format.md). Backends store the framed bytes;
// callers of a Store only ever see the content, and a full read verifies the
// digest.
package storage
