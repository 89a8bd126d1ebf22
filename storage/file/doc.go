// Package file keeps the archive in a local directory (file:///abs/dir), one
// file per object at the path of its key, so the tree looks like the bucket
// of the S3 store and can be copied to one as is.
package file
