// Package archive defines the archive's layout in a store: object keys,
// the segment manifest and the header that carries it at the head of the
// segment object (format 2), the catalog that lets readers find segments
// without listing and fetching every manifest, and the prune floor with
// the truncation order that keeps readers correct. docs/archive-format.md
// is the normative description; this package is its implementation, shared
// by the archiver (writes), retention (truncates) and every reader.
package archive
