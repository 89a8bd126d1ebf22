// Package s3 keeps the archive in an S3 bucket, or any S3-compatible server
// (versitygw, MinIO, Ceph), under a key prefix.
package s3
