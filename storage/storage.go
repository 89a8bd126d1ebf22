package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Store is the archive's storage. Keys are slash-separated relative paths of
// printable ASCII without "." or ".." elements; ValidateKey checks them. As in
// a file system, a key may not also be a directory of other keys ("a/b" next
// to "a/b/c"): the file store and S3 gateways over a file system (versitygw)
// cannot hold both, so the archive layout never needs it, and the second Put
// fails on those backends.
//
// Contract shared by every implementation:
//   - Put and PutIfAbsent are atomic: a concurrent or later reader sees the
//     old object, no object, or the whole new one, never a prefix. If the
//     writer fails or ctx ends midway, nothing becomes visible.
//   - Get verifies the digest as the content is read: the last Read returns a
//     *ChecksumError instead of io.EOF when the content does not match.
//   - Missing keys give an error wrapping ErrNotFound (Get, Stat).
//   - Delete of a missing key succeeds (idempotent).
//   - List walks keys with the prefix in byte order, without a limit.
//   - Transient failures (5xx, network) are retried inside the backend;
//     an error that reaches the caller has exhausted them.
type Store interface {
	// Put stores the content read from r under key, replacing any object.
	Put(ctx context.Context, key string, r io.Reader) (ObjectInfo, error)
	// PutIfAbsent stores the content only if no object exists under key,
	// and otherwise returns an error wrapping ErrExists. Among concurrent
	// callers exactly one wins. On S3 a retried request whose first attempt
	// succeeded unseen also reports ErrExists: a caller that must tell
	// compares Stat's digest with its own.
	PutIfAbsent(ctx context.Context, key string, r io.Reader) (ObjectInfo, error)
	// Get opens the content of key for reading.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Stat returns the object's size and digest without reading it.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every object whose key starts with prefix, in key
	// order. An error from fn stops the walk and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Delete removes key.
	Delete(ctx context.Context, key string) error
	// String names the store for messages, without credentials.
	String() string
}

// Checker is implemented by stores that can test, with one cheap request,
// that they are usable as configured (for preflight checks and `status`).
type Checker interface {
	Check(ctx context.Context) error
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key     string
	Size    int64     // content bytes, without the checksum trailer
	SHA256  string    // hex digest of the content; empty from List when the backend cannot tell cheaply
	ModTime time.Time // zero in what the S3 store's Put returns
}

var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("object not found")
	// ErrExists: PutIfAbsent found an object under the key.
	ErrExists = errors.New("object already exists")
)

// ChecksumError reports an object whose content does not match its digest,
// or whose checksum trailer is missing or damaged.
type ChecksumError struct {
	Key    string
	Want   string // digest recorded in the object; empty when the trailer is unreadable
	Got    string // digest of the content read
	Reason string // set when the trailer itself is damaged
}

func (e *ChecksumError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("object %s is damaged: %s", e.Key, e.Reason)
	}
	return fmt.Sprintf("object %s is damaged: content SHA-256 %s, recorded %s", e.Key, e.Got, e.Want)
}

// ConfigError reports a store that cannot work as configured: wrong
// credentials, a missing bucket or directory, no permission. Retrying won't
// help; the message says what to fix. It is meant for exit code 2.
type ConfigError struct {
	Store   string // e.g. `s3 bucket "archive"`, `directory "/var/lib/binvault"`
	Problem string
	Fix     string
	Err     error // the underlying error, for errors.As; not shown
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Store, e.Problem, e.Fix)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// IsChecksum reports whether err is (or wraps) a *ChecksumError.
func IsChecksum(err error) bool {
	var ce *ChecksumError
	return errors.As(err, &ce)
}

// ValidateKey rejects keys that could escape a directory or would not sort or
// round-trip the same way on every backend.
func ValidateKey(key string) error {
	if key == "" {
		return errors.New("empty object key")
	}
	if key[0] == '/' || key[len(key)-1] == '/' {
		return fmt.Errorf("object key %q must not start or end with /", key)
	}
	start := 0
	for i := 0; i <= len(key); i++ {
		if i < len(key) {
			c := key[i]
			if c < 0x21 || c > 0x7e || c == '\\' {
				return fmt.Errorf("object key %q has a character outside printable ASCII", key)
			}
			if c != '/' {
				continue
			}
		}
		switch key[start:i] {
		case "", ".", "..":
			return fmt.Errorf("object key %q has an empty, . or .. element", key)
		}
		start = i + 1
	}
	return nil
}
